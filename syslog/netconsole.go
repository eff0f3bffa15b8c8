package syslog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// NetconsoleConfig configures a Netconsole receiver.
type NetconsoleConfig struct {
	// Allow lists the networks whose consoles are kept.
	Allow []netip.Prefix
	// Sink takes what one node's kernel sent (one datagram: whole lines,
	// or a part of one). It reports false when src is no node it knows.
	Sink   func(src netip.Addr, text string, t time.Time) bool
	Logger *slog.Logger
	// RatePerSource bounds the bytes a second kept from one address
	// (default 256 KiB); past it, the rest of that second is dropped. A
	// kernel in a panic loop must not cost the others their share.
	RatePerSource int
}

// Netconsole receives the kernel consoles that nodes send with the
// netconsole module (plain UDP datagrams of text, one sender per node),
// which the init points at bootd: what a node printed before its root
// was mounted, and every kernel message after.
type Netconsole struct {
	cfg NetconsoleConfig
	log *slog.Logger

	mu     sync.Mutex
	window time.Time
	used   map[netip.Addr]int

	datagrams, bytes, refused, overRate, unknown atomic.Uint64
}

// maxSources bounds the per-second rate table: datagrams from more
// addresses than this in one second (forged ones) are dropped.
const maxSources = 4096

// NewNetconsole returns a receiver.
func NewNetconsole(cfg NetconsoleConfig) *Netconsole {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RatePerSource <= 0 {
		cfg.RatePerSource = 256 << 10
	}
	return &Netconsole{cfg: cfg, log: cfg.Logger.With("service", "netconsole"), used: map[netip.Addr]int{}}
}

// NetconsoleStats are the receiver's counters.
type NetconsoleStats struct {
	Datagrams, Bytes uint64 // kept
	Refused          uint64 // from addresses outside Allow
	OverRate         uint64 // past RatePerSource
	Unknown          uint64 // from addresses no node is known at
}

// Stats returns the counters since the receiver was made.
func (n *Netconsole) Stats() NetconsoleStats {
	return NetconsoleStats{Datagrams: n.datagrams.Load(), Bytes: n.bytes.Load(), Refused: n.refused.Load(),
		OverRate: n.overRate.Load(), Unknown: n.unknown.Load()}
}

// ListenAndServe receives on the UDP address addr until ctx ends.
func (n *Netconsole) ListenAndServe(ctx context.Context, addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("netconsole: listening on %s: %w", addr, err)
	}
	return n.Serve(ctx, pc.(*net.UDPConn))
}

// Serve receives on conn until ctx ends; it closes conn.
func (n *Netconsole) Serve(ctx context.Context, conn *net.UDPConn) error {
	n.log.Info("receiving node consoles", "addr", conn.LocalAddr().String())
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		size, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A UDP socket's read errors (ICMP noise, buffer trouble)
			// pass; one that keeps failing is not worth spinning on.
			n.log.Debug("read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n.take(src.Addr().Unmap(), buf[:size], time.Now())
	}
}

// take keeps one datagram, if its sender is allowed and within its rate.
func (n *Netconsole) take(src netip.Addr, b []byte, now time.Time) {
	if !allowed(n.cfg.Allow, src) {
		n.refused.Add(1)
		return
	}
	if !n.within(src, len(b), now) {
		n.overRate.Add(1)
		return
	}
	if n.cfg.Sink == nil || !n.cfg.Sink(src, string(b), now) {
		n.unknown.Add(1)
		return
	}
	n.datagrams.Add(1)
	n.bytes.Add(uint64(len(b)))
}

// within counts size bytes against src's budget for the current second.
func (n *Netconsole) within(src netip.Addr, size int, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if now.Sub(n.window) >= time.Second {
		n.window = now
		clear(n.used)
	}
	used, ok := n.used[src]
	if !ok && len(n.used) >= maxSources {
		return false
	}
	if used+size > n.cfg.RatePerSource {
		n.used[src] = used
		return false
	}
	n.used[src] = used + size
	return true
}

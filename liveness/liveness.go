// Package liveness finds nodes that died without saying so. A node that is
// up reports nothing more until it shuts down (bootd runs no agent on it),
// so a node that lost power, panicked or was cut off would look up for
// ever. The prober asks each up node that has gone quiet for an ICMP echo
// now and then; a node that misses several in a row is lost.
//
// It sends only to addresses bootd learned from its own nodes' boots, at
// most one echo per quiet node per interval.
package liveness

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Target is an up node that has gone quiet.
type Target struct {
	MAC string
	IP  netip.Addr
}

// Config says whom to ask and what to do with the answers.
type Config struct {
	// Quiet returns the up nodes not heard from since the time given.
	Quiet func(since time.Time) []Target
	// Alive is called for a node that answered.
	Alive func(mac string, t time.Time)
	// Lost is called for a node that missed Misses echoes in a row.
	Lost   func(mac, why string)
	Logger *slog.Logger
	// Interval between rounds (default 20 s); a node is asked once it has
	// been quiet for Interval, and lost after Misses (default 3) rounds.
	Interval time.Duration
	Misses   int
}

// Prober asks quiet nodes whether they are there.
type Prober struct {
	cfg    Config
	log    *slog.Logger
	mu     sync.Mutex
	missed map[string]int
	seq    uint16
	asked  map[uint16]Target // by echo sequence
	// send sends one echo; Run points it at its ICMP socket.
	send func(ip netip.Addr, seq uint16)
}

// New returns a prober.
func New(cfg Config) *Prober {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 20 * time.Second
	}
	if cfg.Misses <= 0 {
		cfg.Misses = 3
	}
	return &Prober{cfg: cfg, log: cfg.Logger.With("service", "liveness"), missed: map[string]int{}, asked: map[uint16]Target{}}
}

// Run probes until ctx ends. Without the privilege to send ICMP it says
// so once and returns nil: nodes are then lost only by their boots' own
// timeouts.
func (p *Prober) Run(ctx context.Context) error {
	conn, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		p.log.Warn("cannot send ICMP echoes (needs CAP_NET_RAW): nodes that die once up are not noticed", "err", err)
		return nil
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go p.receive(conn)
	p.send = func(ip netip.Addr, seq uint16) {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: echoID, Seq: int(seq), Data: []byte("bootd")}}
		b, _ := msg.Marshal(nil)
		if _, err := conn.WriteTo(b, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
			p.log.Debug("echo", "ip", ip.String(), "err", err)
		}
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.round(time.Now())
		}
	}
}

// round asks every quiet node once and counts the last round's silence.
func (p *Prober) round(now time.Time) {
	quiet := p.cfg.Quiet(now.Add(-p.cfg.Interval))
	p.mu.Lock()
	// Echoes of the last round that got no answer are misses.
	for _, q := range p.asked {
		p.missed[q.MAC]++
	}
	clear(p.asked)
	stillQuiet := map[string]bool{}
	var ask []Target
	for _, q := range quiet {
		stillQuiet[q.MAC] = true
		if p.missed[q.MAC] >= p.cfg.Misses {
			delete(p.missed, q.MAC)
			p.mu.Unlock()
			p.cfg.Lost(q.MAC, fmt.Sprintf("no answer to %d ICMP echoes, %v apart", p.cfg.Misses, p.cfg.Interval))
			p.log.Warn("node stopped answering", "mac", q.MAC, "ip", q.IP.String())
			p.mu.Lock()
			continue
		}
		ask = append(ask, q)
	}
	for mac := range p.missed {
		if !stillQuiet[mac] {
			delete(p.missed, mac)
		}
	}
	type echo struct {
		seq uint16
		ip  netip.Addr
	}
	var send []echo
	for _, q := range ask {
		if !q.IP.Is4() {
			continue
		}
		p.seq++
		p.asked[p.seq] = q
		send = append(send, echo{p.seq, q.IP})
	}
	p.mu.Unlock()
	for _, e := range send {
		p.send(e.ip, e.seq)
	}
}

// echoID marks bootd's echoes (the raw socket sees every echo reply).
var echoID = os.Getpid() & 0xffff

func (p *Prober) receive(conn *icmp.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != echoID {
			continue
		}
		src, _ := netip.ParseAddr(from.String())
		p.answered(src.Unmap(), uint16(e.Seq), time.Now())
	}
}

// answered takes an echo reply.
func (p *Prober) answered(src netip.Addr, seq uint16, t time.Time) {
	p.mu.Lock()
	q, ok := p.asked[seq]
	// The answer must come from the address asked.
	if ok = ok && q.IP == src; ok {
		delete(p.asked, seq)
		delete(p.missed, q.MAC)
	}
	p.mu.Unlock()
	if ok {
		p.cfg.Alive(q.MAC, t)
	}
}

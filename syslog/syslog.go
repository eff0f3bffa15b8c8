// Package syslog receives the logs that diskless nodes forward (rsyslog
// over TCP, as bootd's images are prepared to do, or UDP) and keeps them on
// the master, one file per node under STATE/logs: the nodes' own journals
// live in RAM and die with them.
//
// Everything on the cluster network may be hostile, and what it sends here
// lands on the master's disk, so the receiver bounds what a sender can make
// it hold: the bytes of a message, the connections, the open files and the
// size of each node's log. Messages are written one per line, their control
// characters escaped.
package syslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Server.
type Config struct {
	// Dir receives DIR/<node ip>.log.
	Dir string
	// Allow lists the networks whose messages are kept; empty keeps none.
	Allow  []netip.Prefix
	Logger *slog.Logger
	Limits Limits
	// Metrics, if set, counts messages, bytes and drops for Prometheus.
	Metrics *Metrics
	// OnLine, if set, gets every line kept (escaped, without its newline):
	// bootd adds it to the sender's node record.
	OnLine func(src netip.Addr, line string)
}

// Limits bound the receiver's resources. Zero fields take the defaults.
type Limits struct {
	// MaxLine is the longest message kept, in bytes (default 8192, what
	// RFC 5425 receivers commonly accept); the rest of a longer one is
	// read and thrown away, never buffered.
	MaxLine int
	// MaxFileSize caps a node's log (default 64 MiB): past it, the log
	// becomes LOG.1, replacing the one before.
	MaxFileSize int64
	// OpenFiles is how many node logs are kept open (default 64), the
	// least recently written closed first.
	OpenFiles int
	// Conns caps TCP connections at once, from everyone (default 1024)
	// and from one address (ConnsPerSource, default 4: rsyslog keeps one).
	Conns          int
	ConnsPerSource int
	// IdleTimeout closes a connection that has sent nothing for this long
	// (default 5 minutes); rsyslog reconnects when it next has something
	// to send.
	IdleTimeout time.Duration
}

func (l *Limits) defaults() {
	if l.MaxLine <= 0 {
		l.MaxLine = 8 << 10
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = 64 << 20
	}
	if l.OpenFiles <= 0 {
		l.OpenFiles = 64
	}
	if l.Conns <= 0 {
		l.Conns = 1024
	}
	if l.ConnsPerSource <= 0 {
		l.ConnsPerSource = 4
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 5 * time.Minute
	}
}

// Stats are the receiver's state and counters since it was made.
type Stats struct {
	Conns     int    // TCP connections open
	OpenFiles int    // node logs open
	Messages  uint64 // messages written
	Truncated uint64 // of them, cut to MaxLine
	Failed    uint64 // messages lost to a failed write or rotation
	Refused   uint64 // connections and datagrams from outside Allow
	OverLimit uint64 // connections closed at once for Conns or ConnsPerSource
}

// Server receives syslog messages.
type Server struct {
	dir   string
	allow []netip.Prefix
	lim   Limits
	log   *slog.Logger
	m     *Metrics
	// onLine: Config.OnLine.
	onLine func(src netip.Addr, line string)

	fmu   sync.Mutex // guards files and tick
	files map[netip.Addr]*logFile
	tick  uint64

	cmu     sync.Mutex // guards conns, perSrc and closing
	conns   map[net.Conn]struct{}
	perSrc  map[netip.Addr]int
	closing bool

	messages, truncated, failed, refused, overLimit atomic.Uint64

	// Refusals and errors are logged at most once a minute each: a
	// hostile sender must not be able to flood bootd's own log.
	refusedLog, failedLog, acceptLog every
}

// New returns a server writing Dir/<node ip>.log.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Limits.defaults()
	return &Server{
		dir:    cfg.Dir,
		allow:  cfg.Allow,
		lim:    cfg.Limits,
		log:    log.With("service", "syslog"),
		m:      cfg.Metrics,
		onLine: cfg.OnLine,
		files:  map[netip.Addr]*logFile{},
		conns:  map[net.Conn]struct{}{},
		perSrc: map[netip.Addr]int{},
	}
}

// Stats returns the receiver's state and counters.
func (s *Server) Stats() Stats {
	st := Stats{Messages: s.messages.Load(), Truncated: s.truncated.Load(), Failed: s.failed.Load(),
		Refused: s.refused.Load(), OverLimit: s.overLimit.Load()}
	s.fmu.Lock()
	st.OpenFiles = len(s.files)
	s.fmu.Unlock()
	s.cmu.Lock()
	st.Conns = len(s.conns)
	s.cmu.Unlock()
	return st
}

func (s *Server) allowed(ip netip.Addr) bool { return allowed(s.allow, ip) }

// allowed reports whether a is in one of the networks of list.
func allowed(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ListenAndServe receives on TCP and UDP at addr until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("syslog: %w", err)
	}
	s.log.Info("receiving node logs", "addr", addr, "dir", s.dir)
	return s.serve(ctx, ln, pc)
}

// serve receives on ln and pc until ctx ends, then closes them and every
// connection, and returns when nothing writes any more.
func (s *Server) serve(ctx context.Context, ln net.Listener, pc net.PacketConn) error {
	s.cmu.Lock()
	s.closing = false
	s.cmu.Unlock()
	shut := func() {
		ln.Close()
		pc.Close()
		s.closeConns()
	}
	defer context.AfterFunc(ctx, shut)()
	var wg sync.WaitGroup
	wg.Go(func() { s.serveUDP(pc) })
	s.accept(ctx, ln, &wg)
	shut()
	wg.Wait()
	s.closeFiles()
	return nil
}

// accept takes connections until ln is closed. Other errors (EMFILE,
// ENFILE, ENOBUFS, ENOMEM) pass, and returning would take bootd serve down
// with it, so they are waited out: 5 ms, doubling to 1 s.
func (s *Server) accept(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if s.acceptLog.due() {
				s.log.Warn("accepting log connections, retrying", "err", err, "retry_in", delay)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		ip := addrOf(c.RemoteAddr())
		if !s.allowed(ip) {
			s.refused.Add(1)
			s.m.drop(dropNotAllowed)
			s.noteRefused(ip)
			c.Close()
			continue
		}
		if !s.admit(c, ip) {
			s.overLimit.Add(1)
			s.m.drop(dropTooManyConns)
			s.noteRefused(ip)
			c.Close()
			continue
		}
		s.m.connOpened()
		wg.Go(func() {
			defer s.m.connClosed()
			defer s.release(c, ip)
			s.serveConn(c, ip)
		})
	}
}

func (s *Server) admit(c net.Conn, ip netip.Addr) bool {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.closing || len(s.conns) >= s.lim.Conns || s.perSrc[ip] >= s.lim.ConnsPerSource {
		return false
	}
	s.conns[c] = struct{}{}
	s.perSrc[ip]++
	return true
}

func (s *Server) release(c net.Conn, ip netip.Addr) {
	c.Close()
	s.cmu.Lock()
	defer s.cmu.Unlock()
	delete(s.conns, c)
	if s.perSrc[ip]--; s.perSrc[ip] <= 0 {
		delete(s.perSrc, ip)
	}
}

// closeConns closes every connection and admits no more, so that serve
// can wait for their writers before closing the files.
func (s *Server) closeConns() {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	s.closing = true
	for c := range s.conns {
		c.Close()
	}
}

// serveConn reads newline-framed messages, or octet-counted ones (RFC
// 6587) when a frame starts with its length.
func (s *Server) serveConn(c net.Conn, ip netip.Addr) {
	fr := newFrameReader(idleReader{c, s.lim.IdleTimeout}, s.lim.MaxLine)
	for {
		msg, cut, err := fr.next()
		s.write(ip, msg, cut)
		if err != nil {
			if errors.Is(err, errFrameTooLong) {
				s.m.drop(dropFrameTooLong)
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("closing a log connection", "ip", ip.String(), "err", err)
			}
			return
		}
	}
}

// idleReader times a connection out when it has sent nothing for d: idle
// connections would otherwise hold their slot (and their buffers) forever.
type idleReader struct {
	c net.Conn
	d time.Duration
}

func (r idleReader) Read(p []byte) (int, error) {
	r.c.SetReadDeadline(time.Now().Add(r.d))
	return r.c.Read(p)
}

// serveUDP takes each datagram as one message.
func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (ENOBUFS, ENOMEM) is no reason to stop
			// receiving; a pause keeps a persistent one from spinning.
			if s.failedLog.due() {
				s.log.Warn("receiving log datagrams", "err", err)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		ip := addrOf(from)
		if !s.allowed(ip) {
			s.refused.Add(1)
			s.m.drop(dropNotAllowed)
			s.noteRefused(ip)
			continue
		}
		msg := bytes.TrimRight(buf[:n], "\r\n\x00")
		cut := len(msg) > s.lim.MaxLine
		if cut {
			msg = msg[:s.lim.MaxLine]
		}
		s.write(ip, msg, cut)
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// write appends msg to ip's log as one line.
func (s *Server) write(ip netip.Addr, msg []byte, cut bool) {
	msg = bytes.TrimRight(msg, "\r\n\x00")
	if len(msg) == 0 {
		return
	}
	line := append(escape(make([]byte, 0, len(msg)+16), msg), '\n')
	s.fmu.Lock()
	err := s.append(ip, line)
	s.fmu.Unlock()
	if err != nil {
		s.failed.Add(1)
		s.m.drop(dropWriteFailed)
		if s.failedLog.due() {
			s.log.Error("keeping a node's log", "ip", ip.String(), "err", err, "lost_so_far", s.failed.Load())
		}
		return
	}
	s.messages.Add(1)
	s.m.wrote(len(line))
	if s.onLine != nil {
		s.onLine(ip, string(line[:len(line)-1]))
	}
	if cut {
		s.truncated.Add(1)
		s.m.drop(dropTooLong)
	}
}

func (s *Server) noteRefused(ip netip.Addr) {
	if s.refusedLog.due() {
		s.log.Warn("refused log connections or messages (logged once a minute)", "last_ip", ip.String(),
			"outside_allow_so_far", s.refused.Load(), "over_limits_so_far", s.overLimit.Load())
	}
}

// every says yes at most once a minute.
type every struct{ last atomic.Int64 }

func (e *every) due() bool {
	now, last := time.Now().UnixNano(), e.last.Load()
	return (last == 0 || now-last >= int64(time.Minute)) && e.last.CompareAndSwap(last, now)
}

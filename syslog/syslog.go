// Package syslog receives the logs that diskless nodes forward (rsyslog
// over TCP, as bootd's images are prepared to do, or UDP) and keeps them on
// the master, one file per node under STATE/logs: the nodes' own journals
// live in RAM and die with them.
package syslog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Server receives syslog messages.
type Server struct {
	dir string
	log *slog.Logger
	// Allow lists who may send; nil allows everyone.
	allow []netip.Prefix

	mu    sync.Mutex
	files map[netip.Addr]*os.File
}

// New returns a server writing DIR/<node ip>.log.
func New(dir string, allow []netip.Prefix, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{dir: dir, allow: allow, log: log.With("service", "syslog"), files: map[netip.Addr]*os.File{}}
}

// LogFile is where a node's messages go.
func (s *Server) LogFile(ip netip.Addr) string { return filepath.Join(s.dir, ip.String()+".log") }

func (s *Server) allowed(ip netip.Addr) bool {
	if s.allow == nil {
		return true
	}
	for _, p := range s.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (s *Server) write(ip netip.Addr, msg string) {
	msg = strings.TrimRight(msg, "\r\n\x00")
	if msg == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[ip]
	if f == nil {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			s.log.Error("creating the log directory", "err", err)
			return
		}
		var err error
		f, err = os.OpenFile(s.LogFile(ip), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			s.log.Error("opening a node log", "ip", ip.String(), "err", err)
			return
		}
		s.files[ip] = f
	}
	fmt.Fprintln(f, msg)
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
	go func() {
		<-ctx.Done()
		ln.Close()
		pc.Close()
	}()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ip := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			if s.allowed(ip) {
				s.write(ip, string(buf[:n]))
			}
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				s.close()
				return nil
			}
			return fmt.Errorf("syslog: %w", err)
		}
		ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if !s.allowed(ip) {
			s.log.Warn("refused log connection", "ip", ip.String())
			c.Close()
			continue
		}
		go s.serveTCP(c, ip)
	}
}

// serveTCP reads newline-framed messages, or octet-counted ones (RFC
// 6587) when a frame starts with its length.
func (s *Server) serveTCP(c net.Conn, ip netip.Addr) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		b, err := br.Peek(1)
		if err != nil {
			return
		}
		if b[0] >= '1' && b[0] <= '9' {
			lenStr, err := br.ReadString(' ')
			if err != nil {
				return
			}
			n, err := strconv.Atoi(strings.TrimSpace(lenStr))
			if err != nil || n > 1<<20 {
				return
			}
			msg := make([]byte, n)
			if _, err := io.ReadFull(br, msg); err != nil {
				return
			}
			s.write(ip, string(msg))
			continue
		}
		line, err := br.ReadString('\n')
		s.write(ip, line)
		if err != nil {
			return
		}
	}
}

func (s *Server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ip, f := range s.files {
		f.Close()
		delete(s.files, ip)
	}
}

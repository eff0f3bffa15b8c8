// Package tftp serves the boot tree to PXE firmware and boot loaders:
// pxelinux.0 and ldlinux.c32 for BIOS, syslinux.efi and ldlinux.e64 for
// UEFI, the iPXE builds chained to, a pxelinux.cfg file generated per node
// from the boot plan, and each image generation's kernel and initrd. What
// a name stands for is the boot plan's answer (boot.Planner.BootFile),
// the same the HTTP server gets; this package only moves the bytes.
// Write requests are refused.
//
// Transfers (RFC 1350 with the blksize, tsize, timeout and windowsize
// options) are this package's own, in transfer.go, which says why.
package tftp

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
)

// Config configures a Server.
type Config struct {
	// Planner says what every name in the boot tree is.
	Planner *boot.Planner
	Events  *events.Log
	Logger  *slog.Logger
	// CacheBytes bounds the in-memory cache of boot files (default 1 GiB).
	CacheBytes int64
	// BusyPoll is how long a transfer polls its socket for the next ACK
	// before it sleeps; 0 never polls. It is used only while no more
	// transfers run than a quarter of the CPUs (at least one), only with
	// two CPUs or more, and only while other processes leave a whole CPU
	// idle (spare.go), so that polling never takes a CPU another transfer,
	// the NFS server or another program needs.
	BusyPoll time.Duration
	// Limits bound transfers and request rates (limit.go).
	Limits Limits
	// Metrics, if set, counts transfers, bytes and times for Prometheus.
	Metrics *Metrics
}

// Server is the TFTP server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	cache *fileCache
	limit *limiter

	busyPoll time.Duration
	spinners int32        // transfers that may busy-poll at once
	active   atomic.Int32 // transfers running

	warnMu sync.Mutex
	warned map[string]*warnState
	spare  spareCPUs
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 1 << 30
	}
	s := &Server{cfg: cfg, log: log.With("service", "tftp"), cache: newFileCache(cfg.CacheBytes),
		limit: newLimiter(cfg.Limits), busyPoll: cfg.BusyPoll, warned: map[string]*warnState{}}
	if procs := runtime.GOMAXPROCS(0); procs >= 2 && runtime.NumCPU() >= 2 {
		s.spinners = int32(max(1, procs/4))
	} else {
		s.busyPoll = 0
	}
	return s
}

// content is what a name resolves to.
type content struct {
	data []byte
	file boot.File
}

// resolve finds the bytes for a requested name. Errors are boot.ErrNotFound
// or boot.ErrForbidden, whose fixed texts go to the client.
func (s *Server) resolve(name string, log *slog.Logger) (content, error) {
	f, err := s.cfg.Planner.BootFile(name)
	switch {
	case errors.Is(err, boot.ErrForbidden), errors.Is(err, boot.ErrNotFound):
		return content{}, err
	case errors.Is(err, boot.ErrIgnored):
		return content{}, boot.ErrNotFound
	case err != nil:
		log.Warn("no boot plan", "err", err)
		return content{}, boot.ErrNotFound
	}
	if f.Path == "" {
		return content{data: f.Data, file: f}, nil
	}
	// Served from memory to every node of a boot storm; a stat per
	// request makes sure the cached copy is still this file (a loader
	// upgraded, a generation removed and made again, an initrd rebuilt
	// with --force).
	b, err := s.cache.get(f.Path)
	if err != nil {
		if f.Kind == boot.KindLoader {
			log.Error("loader unreadable (install pxelinux, syslinux-common, syslinux-efi and ipxe, or set tftp.loaders)", "err", err)
		} else {
			log.Error("boot file unreadable", "err", err)
		}
		return content{}, boot.ErrNotFound
	}
	return content{data: b, file: f}, nil
}

// handle answers one request from peer, received on local (nil when
// unknown or a broadcast address: the kernel then picks the source).
func (s *Server) handle(ctx context.Context, b []byte, local net.IP, peer *net.UDPAddr) {
	ip := peer.IP.String()
	log := s.log.With("ip", ip)
	t, err := newTransfer(s, local, peer)
	if err != nil {
		log.Error("cannot answer", "err", err)
		s.cfg.Metrics.turnedAway(resultFailed)
		return
	}
	defer t.close()
	defer context.AfterFunc(ctx, t.close)()
	s.active.Add(1)
	defer s.active.Add(-1)

	req, err := parseRequest(b)
	if err != nil {
		log.Debug("bad request", "bytes", len(b), "err", err)
		t.sendError(errCodeIllegalOp, err.Error())
		s.cfg.Metrics.turnedAway(resultRefused)
		return
	}
	log = log.With("file", req.filename)
	if req.op == opWRQ {
		s.warn(log, "refused write request")
		t.sendError(errCodeAccess, "writes are refused")
		s.cfg.Metrics.turnedAway(resultRefused)
		return
	}
	c, err := s.resolve(req.filename, log)
	if errors.Is(err, boot.ErrForbidden) {
		s.warn(log, "refused file name", "err", err)
	} else if err != nil {
		log.Debug("not found")
	}
	if err != nil {
		t.sendError(errorCode(err), err.Error())
		s.cfg.Metrics.turnedAway(refusal(err))
		return
	}
	p := c.file.Name
	if c.file.MAC != nil {
		log = log.With("mac", c.file.MAC.String())
	}
	gen := ""
	if c.file.Image != "" {
		gen = fmt.Sprintf("%s/%d", c.file.Image, c.file.Generation)
	}
	var src source = octets(c.data)
	size := len(c.data)
	if req.mode == "netascii" {
		size = netasciiSize(c.data)
	}
	prm := negotiate(req.options, size)
	if req.mode == "netascii" {
		src = newNetascii(c.data, prm.blksize)
	}
	start := time.Now()
	err = t.send(src, prm)
	s.cfg.Metrics.sent(events.FetchStage(c.file.Kind), err, t.sent, time.Since(start))
	if err != nil {
		var ec errClient
		switch {
		case ctx.Err() != nil:
		case errors.As(err, &ec):
			// Loaders end transfers on purpose, e.g. after learning tsize.
			log.Info("client ended the transfer", "acked_blocks", t.acked, "code", ec.code)
		default:
			if !t.gotAck {
				// Never acknowledged anything: a probe, a forged source or
				// a client that died. Not worth a warning each.
				log.Debug("transfer abandoned before its first ACK", "err", err)
				return
			}
			s.warn(log, "transfer failed", "blksize", prm.blksize, "acked_blocks", t.acked, "err", err)
		}
		return
	}
	ev := events.Event{IP: ip, Stage: events.FetchStage(c.file.Kind), Detail: "tftp " + p}
	if c.file.MAC != nil {
		ev.MAC = c.file.MAC.String()
		ev.Image, ev.Generation = c.file.Image, c.file.Generation
		ev.Detail = "tftp " + p + " -> " + gen
	}
	s.cfg.Events.Record(ev)
	log.Info("sent", "bytes", size, "blksize", prm.blksize, "took", time.Since(start).Round(time.Millisecond), "generation", gen)
}

// warn logs a warning that strangers can cause, at most once per
// warnEvery for each message, with the number of the same warnings held
// back since the last one: a flood of bad requests must not become a flood
// of log lines.
func (s *Server) warn(log *slog.Logger, msg string, args ...any) {
	s.warnMu.Lock()
	w := s.warned[msg]
	if w == nil {
		if len(s.warned) > 64 {
			clear(s.warned)
		}
		w = &warnState{}
		s.warned[msg] = w
	}
	now := time.Now()
	if now.Sub(w.last) < warnEvery {
		w.held++
		s.warnMu.Unlock()
		return
	}
	held := w.held
	w.last, w.held = now, 0
	s.warnMu.Unlock()
	if held > 0 {
		args = append(args, "more_since_last", held)
	}
	log.Warn(msg, args...)
}

type warnState struct {
	last time.Time
	held int
}

const warnEvery = 10 * time.Second

func errorCode(err error) uint16 {
	if errors.Is(err, boot.ErrForbidden) {
		return errCodeAccess
	}
	return errCodeNotFound
}

// Serve answers TFTP on conn until ctx ends, then waits for the
// transfers in progress to stop.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	// The address a request came to is the one its transfer answers from,
	// so a master with several addresses answers from the right one.
	var pc *ipv4.PacketConn
	if uc, ok := conn.(*net.UDPConn); ok {
		pc = ipv4.NewPacketConn(uc)
		if pc.SetControlMessage(ipv4.FlagDst, true) != nil {
			pc = nil
		}
	}
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if s.busyPoll > 0 {
		go s.spare.run(ctx, runtime.NumCPU(), s.log)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	s.log.Info("serving boot files", "addr", conn.LocalAddr().String(), "busy_poll", s.busyPoll.String())
	// RFC 2347 caps a request at 512 bytes; a little more is accepted.
	buf := make([]byte, 2048)
	for {
		var (
			n     int
			peer  net.Addr
			local net.IP
			err   error
		)
		if pc != nil {
			var cm *ipv4.ControlMessage
			n, cm, peer, err = pc.ReadFrom(buf)
			if cm != nil {
				local = cm.Dst
			}
		} else {
			n, peer, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			conn.Close()
			return fmt.Errorf("tftp: reading requests: %w", err)
		}
		ua, ok := peer.(*net.UDPAddr)
		if !ok {
			continue
		}
		ip := ua.AddrPort().Addr().Unmap()
		switch s.limit.admit(ip, time.Now()) {
		case throttled:
			s.warn(s.log, "dropped requests over the per-address rate", "ip", ip.String(), "rate", s.limit.lim.Rate)
			s.cfg.Metrics.turnedAway(resultRefused)
			continue
		case full:
			s.warn(s.log, "requests wait for a free transfer slot (dropped, the client asks again)", "ip", ip.String(),
				"max_transfers", s.limit.lim.Transfers)
			s.cfg.Metrics.turnedAway(resultRefused)
			continue
		case busy:
			// From the server port, not a transfer socket: a refusal must
			// cost no socket.
			conn.WriteTo(appendError(nil, errCodeUndefined, "too many transfers, try again later"), peer)
			s.warn(s.log, "refused requests over the per-address transfer limit", "ip", ip.String(),
				"per_client", s.limit.lim.PerClient)
			s.cfg.Metrics.turnedAway(resultRefused)
			continue
		}
		if local != nil && (local.Equal(net.IPv4bcast) || local.IsMulticast() || local.IsUnspecified()) {
			local = nil
		}
		req := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		s.cfg.Metrics.started()
		go func() {
			defer wg.Done()
			defer s.limit.release(ip)
			defer s.cfg.Metrics.finished()
			s.handle(ctx, req, local, ua)
		}()
	}
}

// ListenAndServe listens on a UDP address and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	conn, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return fmt.Errorf("tftp: listening on %s: %w", addr, err)
	}
	return s.Serve(ctx, conn)
}

// fileCache keeps boot files in memory, least recently used dropped first.
type fileCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	lru   *list.List
	items map[string]*list.Element
	// loading holds a channel per file being read, closed when it is in:
	// a boot storm's first requests all miss at once, and each reading
	// its own copy of an initrd would cost a copy per node.
	loading map[string]chan struct{}
}

type cached struct {
	path string
	data []byte
	id   fileID
}

// fileID tells one file from another at the same path: a file replaced
// by rename has another inode, one rewritten in place another mtime or
// size.
type fileID struct {
	dev, ino uint64
	mtime    time.Time
	size     int64
}

func idOf(st os.FileInfo) fileID {
	id := fileID{mtime: st.ModTime(), size: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id
}

func newFileCache(max int64) *fileCache {
	return &fileCache{max: max, lru: list.New(), items: map[string]*list.Element{}, loading: map[string]chan struct{}{}}
}

// get returns the file's bytes, from memory while the file at that path
// is still the one cached (loader files change on a Debian upgrade).
func (fc *fileCache) get(file string) ([]byte, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	id := idOf(st)
	fc.mu.Lock()
	for {
		if el, ok := fc.items[file]; ok {
			c := el.Value.(*cached)
			if c.id == id {
				fc.lru.MoveToFront(el)
				fc.mu.Unlock()
				return c.data, nil
			}
			fc.remove(el)
		}
		wait, busy := fc.loading[file]
		if !busy {
			break
		}
		fc.mu.Unlock()
		<-wait
		fc.mu.Lock()
	}
	done := make(chan struct{})
	fc.loading[file] = done
	fc.mu.Unlock()
	defer func() {
		fc.mu.Lock()
		delete(fc.loading, file)
		fc.mu.Unlock()
		close(done)
	}()
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The identity of what is read, not of what was stat'ed before: the
	// file may have been replaced in between.
	if st, err = f.Stat(); err != nil {
		return nil, err
	}
	// One buffer of the size stat gave: no doubling copies of an initrd.
	data := make([]byte, st.Size())
	n, err := io.ReadFull(f, data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	data = data[:n]
	c := &cached{path: file, data: data, id: idOf(st)}
	if int64(len(data)) != st.Size() {
		c.id.size = -1 // changed while read: read it again next time
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if el, ok := fc.items[file]; ok {
		fc.remove(el)
	}
	fc.items[file] = fc.lru.PushFront(c)
	fc.size += int64(len(data))
	for fc.size > fc.max && fc.lru.Len() > 1 {
		fc.remove(fc.lru.Back())
	}
	return data, nil
}

func (fc *fileCache) remove(el *list.Element) {
	c := el.Value.(*cached)
	fc.lru.Remove(el)
	delete(fc.items, c.path)
	fc.size -= int64(len(c.data))
}

// Package nfs serves published image generations to diskless nodes as a
// read-only NFSv3 export, with MOUNT and NFS on one TCP port so that a
// node's kernel mounts its root with no rpcbind and no kernel nfsd on the
// master:
//
//	mount -t nfs -o vers=3,proto=tcp,port=P,mountport=P,mountproto=tcp,nolock,ro \
//	    MASTER:/NAME/GEN /root
//
// Each generation is exported at /NAME/GEN; /NAME (and /NAME/current)
// resolve to the current generation at MOUNT time, so a node is pinned to
// the generation it mounted for as long as it runs.
//
// File handles are a pure function of image name, generation and the
// tree's contents: they survive a bootd restart and are byte-identical on
// two masters serving the same generation, so a node's root never goes
// stale because its master restarted or failed over. The export is
// read-only by construction: every mutating procedure answers NFS3ERR_ROFS,
// and nothing a client sends is ever used as a path.
package nfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/store"
)

// Config configures a Server.
type Config struct {
	Store *store.Store
	// Allow lists the client networks; connections from elsewhere are
	// closed at accept and MOUNT calls from elsewhere refused.
	Allow []netip.Prefix
	// SecurePorts refuses clients whose source port is 1024 or above.
	SecurePorts bool
	Logger      *slog.Logger
	// OnMount, if set, is told of every successful MOUNT.
	OnMount func(client netip.AddrPort, image string, gen int)
	// Squash, if set, says whether root from this client is mapped to
	// nobody (root_squash): AUTH_SYS lets anyone on an allowed network
	// claim uid 0, so bootd gives root's rights only to its own nodes.
	Squash func(client netip.Addr) bool
	// MaxConns bounds connections from everyone (default 1024) and
	// MaxConnsPerClient those from one address (default 8; Linux opens
	// one per server and mount options, a few more with nconnect). A
	// connection over either is closed at accept.
	MaxConns, MaxConnsPerClient int
	// Metrics, if set, counts calls, data read and connections for
	// Prometheus.
	Metrics *Metrics
	// Record, if set, is told of every read-only NFS call with a valid
	// handle, by path (Op): how a boot's working set is recorded for
	// bench/storm. It is called on the connection's goroutine; it must
	// not block.
	Record func(Op)
}

// Deadlines, so that a client that stops talking costs nothing for long.
// Variables so that tests need not wait them out.
var (
	// idleTimeout closes a connection with no call for this long; Linux
	// reconnects on its next call (and drops idle ones itself after 5 min).
	idleTimeout = 15 * time.Minute
	// recordTimeout bounds the time from a record's first byte to its
	// last: a record trickled in a byte at a time is dropped.
	recordTimeout = time.Minute
	// writeTimeout bounds one reply's write to a client that stopped
	// reading.
	writeTimeout = time.Minute
)

// maxReadsInFlight bounds the READs being served at once over all
// connections (each holds up to 1 MiB).
const maxReadsInFlight = 128

// Server is the NFS and MOUNT server. Create it with New.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.RWMutex
	trees    map[genID]*treeSlot
	known    map[genID]genRef // generation ids found in the store
	lastScan time.Time

	files *fileCache

	reads chan struct{} // READ slots over all connections

	cmu     sync.Mutex
	conns   map[net.Conn]netip.Addr
	perAddr map[netip.Addr]int

	refusedLogged atomic.Int64 // unix ns of the last refusal log line
	refused       atomic.Int64 // refusals since then
}

type genRef struct {
	name string
	gen  int
}

type treeSlot struct {
	once  sync.Once
	ready atomic.Bool // t is built
	t     *tree
	err   error
	// used is when a call last resolved a handle in this tree (unix
	// seconds), for the sweep.
	used atomic.Int64
}

// Indexes are kept while used: one not used for treeIdle is dropped (a
// later call builds it again, with the same handles), and at most
// maxTrees are kept, so that forged handles naming every old generation
// in the store cannot make bootd hold all their indexes.
var (
	treeIdle  = 30 * time.Minute
	maxTrees  = 16
	sweepEach = 10 * time.Second
)

// New returns a server for the generations in cfg.Store.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxConnsPerClient <= 0 {
		cfg.MaxConnsPerClient = 8
	}
	return &Server{
		cfg:     cfg,
		log:     log.With("service", "nfs"),
		trees:   map[genID]*treeSlot{},
		known:   map[genID]genRef{},
		files:   newFileCache(256),
		reads:   make(chan struct{}, maxReadsInFlight),
		conns:   map[net.Conn]netip.Addr{},
		perAddr: map[netip.Addr]int{},
	}
}

// ListenAndServe listens on addr (TCP) and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("nfs: listening on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx ends or ln fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.log.Info("serving read-only NFSv3 and MOUNT", "addr", ln.Addr().String())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	go func() {
		<-ctx.Done()
		ln.Close()
		s.cmu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.cmu.Unlock()
	}()
	defer func() {
		s.files.closeAll()
	}()
	defer wg.Wait()
	go s.sweepTrees(ctx)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("nfs: accepting: %w", err)
			}
			// Out of file descriptors, buffers or memory, or a connection
			// reset before it was accepted: all pass. The export must
			// outlive them, so wait a little and go on.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.cfg.Metrics.failed(failAccept)
			s.noteRefused("accepting", "err", err.Error(), "retry_in", delay.String())
			time.Sleep(delay)
			continue
		}
		delay = 0
		peer := addrPort(c.RemoteAddr())
		if reason := s.refuse(peer); reason != "" {
			s.cfg.Metrics.refused(reason)
			s.noteRefused("refused connection", "client", peer.String(), "reason", reason)
			c.Close()
			continue
		}
		if reason := s.track(c, peer.Addr()); reason != "" {
			s.cfg.Metrics.refused(reason)
			s.noteRefused("refused connection", "client", peer.String(), "reason", reason,
				"max", s.cfg.MaxConns, "per_client", s.cfg.MaxConnsPerClient)
			c.Close()
			continue
		}
		wg.Add(1)
		s.cfg.Metrics.connOpened()
		go func() {
			defer wg.Done()
			defer s.cfg.Metrics.connClosed()
			defer s.untrack(c)
			s.serveConn(ctx, c, peer)
		}()
	}
}

// Why a connection is refused at accept (logged, and counted by reason).
const (
	whyNotAllowed       = "address not in nfs.allow"
	whyInsecurePort     = "source port is not privileged (nfs.secure_ports is on)"
	whyTooMany          = "too many connections"
	whyTooManyPerClient = "too many connections from this address"
)

// track counts a new connection against the limits, or says which one it
// is over.
func (s *Server) track(c net.Conn, a netip.Addr) (over string) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if len(s.conns) >= s.cfg.MaxConns {
		return whyTooMany
	}
	if s.perAddr[a] >= s.cfg.MaxConnsPerClient {
		return whyTooManyPerClient
	}
	s.conns[c] = a
	s.perAddr[a]++
	return ""
}

func (s *Server) untrack(c net.Conn) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	a := s.conns[c]
	delete(s.conns, c)
	if s.perAddr[a]--; s.perAddr[a] <= 0 {
		delete(s.perAddr, a)
	}
}

// Conns returns the number of open client connections.
func (s *Server) Conns() int {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return len(s.conns)
}

// noteRefused logs a refusal at most every 10 seconds, with the number of
// refusals since the last line: a stranger's flood must not become a
// flood of log lines.
func (s *Server) noteRefused(msg string, args ...any) {
	n := s.refused.Add(1)
	now := time.Now().UnixNano()
	last := s.refusedLogged.Load()
	if now-last < int64(10*time.Second) || !s.refusedLogged.CompareAndSwap(last, now) {
		return
	}
	s.refused.Add(-n)
	s.log.Warn(msg, append(args, "refusals", n)...)
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// refuse says why a client may not use the export, or "" if it may.
func (s *Server) refuse(peer netip.AddrPort) string {
	allowed := false
	for _, p := range s.cfg.Allow {
		if p.Contains(peer.Addr()) {
			allowed = true
			break
		}
	}
	if !allowed {
		return whyNotAllowed
	}
	if s.cfg.SecurePorts && peer.Port() >= 1024 {
		return whyInsecurePort
	}
	return ""
}

// maxInFlight bounds the calls one connection may have in progress. Linux
// keeps many READs outstanding on one connection during readahead; serving
// them one at a time would cap throughput at one disk read per round trip.
const maxInFlight = 32

// Calls and replies have pools of their own: a call is a few hundred
// bytes, a READ's reply up to rsize. Sharing one pool handed READ-sized
// buffers to calls that then sat in them.
var (
	bufPool  = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
	callPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
)

func (s *Server) serveConn(ctx context.Context, c net.Conn, peer netip.AddrPort) {
	log := s.log.With("client", peer.String())
	log.Debug("connected")
	defer c.Close()
	// Calls are small (a read-only server gets no WRITE data): a small
	// reader, and no record buffer while the connection waits for its
	// next call. A thousand nodes' idle connections then cost bootd a few
	// KiB each, not the 128 KiB a 64 KiB reader and a pooled buffer did
	// (measured: bench/storm.sh 1000).
	br := bufio.NewReaderSize(c, 4<<10)
	_, zeroCopy := c.(*net.TCPConn)
	var wmu sync.Mutex
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	closed := func(err error, inRecord bool) {
		s.cfg.Metrics.readFailed(err, inRecord)
		if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) && err.Error() != "EOF" {
			log.Debug("connection closed", "err", err)
		}
	}
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		if _, err := br.Peek(1); err != nil {
			closed(err, false)
			return
		}
		bp := callPool.Get().(*[]byte)
		inRecord := false
		rec, err := readRecord(br, *bp, func() { inRecord = true; c.SetReadDeadline(time.Now().Add(recordTimeout)) })
		if err != nil {
			callPool.Put(bp)
			closed(err, inRecord)
			return
		}
		handle := func() {
			out := bufPool.Get().(*[]byte)
			start := time.Now()
			reply, tail := s.dispatchTo(log, peer, rec, (*out)[:0], zeroCopy)
			s.cfg.Metrics.call(rec, reply, start)
			if cap(rec) <= 64<<10 {
				*bp = rec[:0]
				callPool.Put(bp)
			}
			if reply != nil {
				wmu.Lock()
				c.SetWriteDeadline(time.Now().Add(writeTimeout))
				err := sendReply(c, reply, tail)
				wmu.Unlock()
				if err != nil {
					s.cfg.Metrics.writeFailed(err)
					c.Close()
				}
			}
			if tail != nil {
				tail.release()
			}
			if cap(reply) <= 2<<20 {
				*out = reply[:0]
				bufPool.Put(out)
			}
		}
		// Metadata calls are answered from memory faster than a goroutine
		// starts: answer them here, in order. READs wait on the disk, so
		// they run beside each other.
		if !isRead(rec) {
			handle()
			continue
		}
		sem <- struct{}{}
		s.reads <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.reads; <-sem }()
			handle()
		}()
	}
}

// isRead says whether a record is an NFSv3 READ call (program, version
// and procedure sit at fixed offsets of the call header).
func isRead(rec []byte) bool {
	return len(rec) >= 24 && binary.BigEndian.Uint32(rec[12:]) == progNFS &&
		binary.BigEndian.Uint32(rec[16:]) == 3 && binary.BigEndian.Uint32(rec[20:]) == procRead
}

// dispatch decodes one call and builds its reply into out (nil: no reply).
func (s *Server) dispatch(log *slog.Logger, peer netip.AddrPort, rec []byte, out []byte) []byte {
	b, tail := s.dispatchTo(log, peer, rec, out, false)
	if tail != nil {
		tail.release()
	}
	return b
}

// dispatchTo is dispatch that, with zeroCopy, may leave a READ's data in
// its file: the reply is then b followed by tail's bytes (sendReply).
func (s *Server) dispatchTo(log *slog.Logger, peer netip.AddrPort, rec []byte, out []byte, zeroCopy bool) (b []byte, tail *fileTail) {
	r := &xdrReader{b: rec}
	h, err := parseCall(r)
	if err == nil && h.cred.uid == 0 && s.cfg.Squash != nil && s.cfg.Squash(peer.Addr()) {
		h.cred = nobody
	}
	w := &xdrWriter{b: out}
	if err != nil {
		if len(rec) < 8 {
			log.Debug("dropped garbage call", "err", err)
			return nil, nil
		}
		log.Debug("garbage call", "err", err)
		replyHeader(w, h.xid, acceptGarbageArgs)
		return w.b, nil
	}
	if h.rpcvers != 2 {
		deniedHeader(w, h.xid)
		w.u32(rejectRPCMismatch)
		w.u32(2)
		w.u32(2)
		return w.b, nil
	}
	if h.flavor != authNone && h.flavor != authUnix {
		deniedHeader(w, h.xid)
		w.u32(rejectAuthError)
		w.u32(authTooWeak)
		return w.b, nil
	}
	c := &call{s: s, log: log, peer: peer, h: h, args: r, w: w, zeroCopy: zeroCopy}
	defer func() { tail = c.tail }()
	// NFS, MOUNT and NFSACL are all served at version 3 only.
	switch h.prog {
	case progNFS, progMount, progNFSACL:
	default:
		// NLM and the like: PROG_UNAVAIL tells a Linux client to stop
		// asking, where PROC_UNAVAIL would have it retry.
		log.Debug("program unavailable", "prog", h.prog, "vers", h.vers)
		replyHeader(w, h.xid, acceptProgUnavail)
		return w.b, nil
	}
	if h.vers != 3 {
		replyHeader(w, h.xid, acceptProgMismatch)
		w.u32(3)
		w.u32(3)
		return w.b, nil
	}
	switch h.prog {
	case progNFS:
		c.nfs()
	case progMount:
		c.mount()
	case progNFSACL:
		c.nfsacl()
	}
	return w.b, nil
}

// call is one RPC call being answered.
type call struct {
	s    *Server
	log  *slog.Logger
	peer netip.AddrPort
	h    callHeader
	args *xdrReader
	w    *xdrWriter
	// zeroCopy lets READ leave its data in the file (tail), for the
	// connection to send with sendfile.
	zeroCopy bool
	tail     *fileTail
}

func (c *call) ok() { replyHeader(c.w, c.h.xid, acceptSuccess) }

func (c *call) garbage() {
	c.log.Debug("garbage arguments", "prog", c.h.prog, "proc", c.h.proc, "err", c.args.err)
	replyHeader(c.w, c.h.xid, acceptGarbageArgs)
}

func (c *call) procUnavail() { replyHeader(c.w, c.h.xid, acceptProcUnavail) }

// treeByID returns the index of a generation, building it on first use.
func (s *Server) treeByID(id genID) (*tree, error) {
	// Every call of every node comes through here: the common case is one
	// read-locked map lookup.
	s.mu.RLock()
	slot := s.trees[id]
	s.mu.RUnlock()
	if slot != nil && slot.ready.Load() {
		slot.touch()
		return slot.t, nil
	}
	s.mu.Lock()
	ref, ok := s.known[id]
	if !ok && time.Since(s.lastScan) > time.Second {
		// A generation published since the last look, or a handle from
		// before a restart: look in the store again, at most once a second
		// so that a flood of forged handles costs nothing.
		s.lastScan = time.Now()
		s.mu.Unlock()
		found := s.scanStore()
		s.mu.Lock()
		for k, v := range found {
			s.known[k] = v
		}
		ref, ok = s.known[id]
	}
	s.mu.Unlock()
	if !ok {
		return nil, errStale
	}
	return s.tree(ref.name, ref.gen)
}

var errStale = errors.New("no such generation")

func (s *Server) scanStore() map[genID]genRef {
	found := map[genID]genRef{}
	names, err := s.cfg.Store.Images()
	if err != nil {
		s.log.Warn("scanning image store", "err", err)
		return found
	}
	for _, n := range names {
		gens, err := s.cfg.Store.Generations(n)
		if err != nil {
			continue
		}
		for _, g := range gens {
			found[makeGenID(n, g)] = genRef{n, g}
		}
	}
	return found
}

// tree returns the index of name/gen, building it once.
func (s *Server) tree(name string, gen int) (*tree, error) {
	id := makeGenID(name, gen)
	s.mu.Lock()
	s.known[id] = genRef{name, gen}
	slot := s.trees[id]
	if slot == nil {
		slot = &treeSlot{}
		s.trees[id] = slot
	}
	s.mu.Unlock()
	slot.touch()
	slot.once.Do(func() {
		start := time.Now()
		slot.t, slot.err = buildTree(name, gen, s.cfg.Store.RootDir(name, gen))
		if slot.err == nil {
			slot.ready.Store(true)
			s.log.Info("indexed generation", "image", name, "generation", gen,
				"entries", slot.t.count(), "took", time.Since(start).Round(time.Millisecond))
			// Indexing reads every directory of the image; hand what that
			// took back to the system rather than keep it as idle heap.
			debug.FreeOSMemory()
		}
	})
	if slot.err != nil {
		// Do not remember failures: the generation may be being published.
		s.mu.Lock()
		if s.trees[id] == slot {
			delete(s.trees, id)
		}
		s.mu.Unlock()
		return nil, slot.err
	}
	return slot.t, nil
}

// touch records a use, at most one store a second.
func (sl *treeSlot) touch() {
	now := time.Now().Unix()
	if sl.used.Load() != now {
		sl.used.Store(now)
	}
}

// sweepTrees drops indexes whose generation directory is gone or was
// made again (another inode: its handles must not resolve into the old
// index), then idle ones, then the least recently used beyond maxTrees.
func (s *Server) sweepTrees(ctx context.Context) {
	tk := time.NewTicker(sweepEach)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			s.sweepOnce(time.Now())
		}
	}
}

func (s *Server) sweepOnce(now time.Time) {
	type cand struct {
		id   genID
		used int64
	}
	var live []cand
	var drop []genID
	s.mu.RLock()
	for id, sl := range s.trees {
		if !sl.ready.Load() {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(s.cfg.Store.RootDir(sl.t.name, sl.t.gen), &st); err != nil || [2]uint64{st.Dev, st.Ino} != sl.t.rootID {
			drop = append(drop, id)
			continue
		}
		if now.Unix()-sl.used.Load() > int64(treeIdle/time.Second) {
			// The current generation stays indexed: the next node to
			// boot should not wait for it.
			if cur, err := s.cfg.Store.Current(sl.t.name); err != nil || cur != sl.t.gen {
				drop = append(drop, id)
				continue
			}
		}
		live = append(live, cand{id, sl.used.Load()})
	}
	s.mu.RUnlock()
	if len(live) > maxTrees {
		sort.Slice(live, func(i, j int) bool { return live[i].used > live[j].used })
		for _, c := range live[maxTrees:] {
			drop = append(drop, c.id)
		}
	}
	if len(drop) == 0 {
		return
	}
	s.mu.Lock()
	for _, id := range drop {
		if sl := s.trees[id]; sl != nil {
			s.log.Info("dropped generation index", "image", sl.t.name, "generation", sl.t.gen)
		}
		delete(s.trees, id)
		delete(s.known, id)
	}
	s.mu.Unlock()
	for _, id := range drop {
		s.files.dropGen(id)
	}
	debug.FreeOSMemory()
}

// Preload indexes the current generation of every image so that the first
// node to boot after a bootd start does not wait for it.
func (s *Server) Preload() {
	names, _ := s.cfg.Store.Images()
	for _, n := range names {
		if g, err := s.cfg.Store.Current(n); err == nil {
			if _, err := s.tree(n, g); err != nil {
				s.log.Warn("indexing current generation", "image", n, "generation", g, "err", err)
			}
		}
	}
}

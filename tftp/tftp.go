// Package tftp serves the boot tree to PXE firmware and boot loaders:
// pxelinux.0 and ldlinux.c32 for BIOS, syslinux.efi and ldlinux.e64 for
// UEFI, a pxelinux.cfg file generated per node from the boot plan, and each
// image generation's kernel and initrd from the image store.
//
// The tree is virtual: a requested name is cleaned, then matched against
// the few names bootd serves; nothing a client sends is joined to a server
// path, so no name can reach outside the boot tree, and error messages
// never carry a server path. Write requests are refused.
package tftp

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/store"
)

// Config configures a Server.
type Config struct {
	Planner *boot.Planner
	Store   *store.Store
	// Loaders maps loader names (pxelinux.0, ...) to files on this host.
	Loaders map[string]string
	Events  *events.Log
	Logger  *slog.Logger
	// CacheBytes bounds the in-memory cache of boot files (default 1 GiB).
	CacheBytes int64
}

// Server is the TFTP server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	cache *fileCache
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
	return &Server{cfg: cfg, log: log.With("service", "tftp"), cache: newFileCache(cfg.CacheBytes)}
}

// Errors sent to clients: fixed texts, never a server path.
var (
	errNotFound  = errors.New("file not found")
	errForbidden = errors.New("access violation")
)

// Clean turns a requested name into a path in the boot tree, or reports
// that it can name nothing there. Loaders send names with a leading "/"
// or "::" (syslinux's "server root"), and old firmware sends backslashes.
func Clean(name string) (string, error) {
	if strings.ContainsRune(name, 0) || len(name) > 255 {
		return "", errForbidden
	}
	name = strings.ReplaceAll(name, "\\", "/")
	name = strings.TrimPrefix(name, "::")
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return "", errForbidden
		}
	}
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return "", errNotFound
	}
	return p, nil
}

// content is what a name resolves to.
type content struct {
	data []byte
	mac  net.HardwareAddr
	gen  string // "image/gen" for configs and boot files, for events
}

// resolve finds the bytes for a cleaned name.
func (s *Server) resolve(p string, log *slog.Logger) (content, error) {
	if file, ok := s.cfg.Loaders[p]; ok {
		b, err := s.cache.get(file, true)
		if err != nil {
			log.Error("loader unreadable (install pxelinux, syslinux-common and syslinux-efi, or set tftp.loaders)", "err", err)
			return content{}, errNotFound
		}
		return content{data: b}, nil
	}
	if cfgName, ok := strings.CutPrefix(p, "pxelinux.cfg/"); ok {
		return s.pxelinuxConfig(cfgName, log)
	}
	if rest, ok := strings.CutPrefix(p, "images/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) != 3 || (parts[2] != "vmlinuz" && parts[2] != "initrd.img") {
			return content{}, errNotFound
		}
		gen, err := strconv.Atoi(parts[1])
		if err != nil || strconv.Itoa(gen) != parts[1] || store.ValidName(parts[0]) != nil {
			return content{}, errNotFound
		}
		if err := s.cfg.Store.Has(parts[0], gen); err != nil {
			return content{}, errNotFound
		}
		// A published generation never changes: its files are cached for
		// good, and served from memory to every node of a boot storm.
		b, err := s.cache.get(filepath.Join(s.cfg.Store.BootDir(parts[0], gen), parts[2]), false)
		if err != nil {
			log.Error("boot file unreadable", "err", err)
			return content{}, errNotFound
		}
		return content{data: b, gen: parts[0] + "/" + parts[1]}, nil
	}
	return content{}, errNotFound
}

// pxelinuxConfig generates pxelinux.cfg/01-<mac> and pxelinux.cfg/default;
// the loader's other probes (UUID, hex IP prefixes) are not found.
func (s *Server) pxelinuxConfig(name string, log *slog.Logger) (content, error) {
	var mac net.HardwareAddr
	if m, ok := strings.CutPrefix(name, "01-"); ok {
		hw, err := net.ParseMAC(strings.ReplaceAll(m, "-", ":"))
		if err != nil || len(hw) != 6 {
			return content{}, errNotFound
		}
		mac = hw
	} else if name != "default" {
		return content{}, errNotFound
	}
	spec, err := s.cfg.Planner.Plan(mac)
	if err != nil {
		if !errors.Is(err, boot.ErrIgnored) {
			log.Warn("no boot plan", "err", err)
		}
		return content{}, errNotFound
	}
	return content{data: []byte(spec.PXELinuxConfig()), mac: mac, gen: fmt.Sprintf("%s/%d", spec.Image, spec.Generation)}, nil
}

func (s *Server) read(name string, rf io.ReaderFrom) error {
	var ip string
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		ip = ra.AddrPort().Addr().Unmap().String()
	}
	log := s.log.With("ip", ip, "file", name)
	p, err := Clean(name)
	if err != nil {
		log.Warn("refused file name", "err", err)
		return err
	}
	c, err := s.resolve(p, log)
	if err != nil {
		log.Debug("not found")
		return err
	}
	if c.mac != nil {
		log = log.With("mac", c.mac.String())
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(int64(len(c.data)))
	}
	start := time.Now()
	n, err := rf.ReadFrom(bytes.NewReader(c.data))
	if err != nil {
		log.Warn("transfer failed", "sent", n, "err", err)
		return nil // the library has already told the client
	}
	ev := events.Event{IP: ip, Stage: events.StageTFTP, Detail: p}
	if c.mac != nil {
		ev.MAC = c.mac.String()
		ev.Stage = events.StageConfig
		ev.Detail = p + " -> " + c.gen
	}
	s.cfg.Events.Record(ev)
	log.Info("sent", "bytes", n, "took", time.Since(start).Round(time.Millisecond), "generation", c.gen)
	return nil
}

// Serve answers TFTP on conn until ctx ends.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv := tftp.NewServer(s.read, nil)
	// Tuned for a LAN: a lost packet is resent after 1 s and at once,
	// where the library's defaults wait 5 s plus a random back-off.
	srv.SetTimeout(time.Second)
	srv.SetRetries(8)
	srv.SetBackoff(func(int) time.Duration { return 0 })
	// Honour the client's blksize up to RFC 2348's 65464 as tftpd-hpa
	// does, rather than clamping it to the interface MTU.
	srv.SetBlockSizeNegotiation(false)
	go func() {
		<-ctx.Done()
		srv.Shutdown()
		conn.Close()
	}()
	s.log.Info("serving boot files", "addr", conn.LocalAddr().String())
	err := srv.Serve(conn)
	if ctx.Err() != nil {
		return nil
	}
	return err
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
}

type cached struct {
	path  string
	data  []byte
	mtime time.Time
	fsize int64
}

func newFileCache(max int64) *fileCache {
	return &fileCache{max: max, lru: list.New(), items: map[string]*list.Element{}}
}

// get returns the file's bytes. recheck makes it stat the file first:
// loader files belong to Debian packages and change on upgrade, where a
// published generation's files never do.
func (fc *fileCache) get(file string, recheck bool) ([]byte, error) {
	var st os.FileInfo
	if recheck {
		var err error
		if st, err = os.Stat(file); err != nil {
			return nil, err
		}
	}
	fc.mu.Lock()
	if el, ok := fc.items[file]; ok {
		c := el.Value.(*cached)
		if st == nil || (st.ModTime().Equal(c.mtime) && st.Size() == c.fsize) {
			fc.lru.MoveToFront(el)
			fc.mu.Unlock()
			return c.data, nil
		}
		fc.remove(el)
	}
	fc.mu.Unlock()
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if st == nil {
		st, _ = os.Stat(file)
	}
	c := &cached{path: file, data: data}
	if st != nil {
		c.mtime, c.fsize = st.ModTime(), st.Size()
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

package web

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
)

// The boot tree over HTTP: what iPXE fetches (its script, the kernel and
// the initrd) and what UEFI HTTP Boot fetches (snponly.efi), under /boot/.
// Names mean what they mean over TFTP: the boot plan resolves both
// (boot.Planner.BootFile).

// sendChunk is how much of a file goes per write deadline (sendfile does
// the copying).
const sendChunk = 1 << 20

func (s *Server) bootFile(w http.ResponseWriter, r *http.Request) {
	ip := remoteAddr(r)
	log := s.log.With("ip", ip.String(), "file", r.PathValue("path"))
	if s.cfg.Planner == nil {
		http.NotFound(w, r)
		return
	}
	f, err := s.cfg.Planner.BootFile(r.PathValue("path"))
	if err != nil {
		// One answer for every refusal: not found, and no server path.
		if !errors.Is(err, boot.ErrNotFound) && !errors.Is(err, boot.ErrForbidden) && !errors.Is(err, boot.ErrIgnored) {
			log.Warn("no boot plan", "err", err)
		} else {
			log.Debug("boot file refused", "err", err)
		}
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	// Which node: the one a script is for, or the one its script named
	// in the kernel and initrd URLs, unless this address is known as
	// another node's.
	mac := f.MAC
	if mac == nil {
		if hw, err := net.ParseMAC(strings.ReplaceAll(r.URL.Query().Get("mac"), "-", ":")); err == nil && len(hw) == 6 {
			mac = hw
		}
	}
	if known, ok := s.cfg.Log.MACOf(ip.String()); ok && mac != nil && known != mac.String() {
		log.Debug("boot file for another node's MAC from this address; recorded without the MAC", "claimed_mac", mac.String(), "node_mac", known)
		mac = nil
	}
	if mac != nil {
		log = log.With("mac", mac.String())
	}
	var (
		content io.ReadSeeker
		size    int64
		mtime   time.Time
	)
	if f.Path != "" {
		file, err := os.Open(f.Path)
		if err != nil {
			log.Error("boot file unreadable", "err", err)
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		defer file.Close()
		st, err := file.Stat()
		if err != nil || !st.Mode().IsRegular() {
			log.Error("boot file unreadable", "err", err)
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		content, size, mtime = file, st.Size(), st.ModTime()
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		content, size = bytes.NewReader(f.Data), int64(len(f.Data))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		// A script pins the generation current now: never from a cache.
		w.Header().Set("Cache-Control", "no-store")
	}
	start := time.Now()
	cw := &chunkWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: s.cfg.StallTimeout}
	http.ServeContent(cw, r, f.Name, mtime, content)
	cw.rc.SetWriteDeadline(time.Time{}) // the connection may serve more
	took := time.Since(start)
	full := cw.status == http.StatusOK && cw.n == size && r.Method == http.MethodGet
	if !full {
		level := slog.LevelInfo
		if r.Method == http.MethodHead {
			level = slog.LevelDebug
		}
		log.Log(r.Context(), level, "boot file partly sent", "status", cw.status, "bytes", cw.n, "size", size, "method", r.Method)
		return
	}
	gen := ""
	if f.Image != "" {
		gen = fmt.Sprintf("%s/%d", f.Image, f.Generation)
	}
	ev := events.Event{IP: ip.String(), Stage: events.FetchStage(f.Kind), Detail: "http " + f.Name}
	if mac != nil {
		ev.MAC = mac.String()
		if f.Kind == boot.KindConfig {
			ev.Image, ev.Generation = f.Image, f.Generation
			ev.Detail += " -> " + gen
		}
	}
	s.cfg.Log.Record(ev)
	log.Info("sent", "bytes", cw.n, "took", took.Round(time.Millisecond), "generation", gen)
}

// chunkWriter counts what a response sends and gives each chunk of a file
// its own write deadline, keeping sendfile: net/http hands an *os.File
// (in an io.LimitedReader) to ReadFrom, which passes it on a chunk at a time.
type chunkWriter struct {
	http.ResponseWriter
	rc     *http.ResponseController
	stall  time.Duration
	n      int64
	status int
}

func (c *chunkWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *chunkWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.rc.SetWriteDeadline(time.Now().Add(c.stall))
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *chunkWriter) ReadFrom(src io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	lr, ok := src.(*io.LimitedReader)
	rf, ok2 := c.ResponseWriter.(io.ReaderFrom)
	if !ok || !ok2 {
		return io.Copy(struct{ io.Writer }{c}, src)
	}
	var total int64
	for lr.N > 0 {
		chunk := &io.LimitedReader{R: lr.R, N: min(lr.N, sendChunk)}
		c.rc.SetWriteDeadline(time.Now().Add(c.stall))
		n, err := rf.ReadFrom(chunk)
		lr.N -= n
		total += n
		c.n += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			break // the file ended early
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the connection.
func (c *chunkWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

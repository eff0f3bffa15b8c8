package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/bootd/bootd/nfs"
	"github.com/bootd/bootd/syslog"
	"github.com/bootd/bootd/tftp"
)

// Stats is what `bootd serve` holds, written to STATE/run/stats.json every
// statsEvery so that soak runs and admins can watch it without reading
// logs (the HTTP API will serve the same).
type Stats struct {
	Time       time.Time     `json:"time"`
	PID        int           `json:"pid"`
	Goroutines int           `json:"goroutines"`
	Threads    int           `json:"threads"`
	OpenFDs    int           `json:"open_fds"`
	RSSBytes   int64         `json:"rss_bytes"`
	HeapBytes  uint64        `json:"heap_bytes"`
	TFTP       *tftp.Stats   `json:"tftp,omitempty"`
	NFSConns   *int          `json:"nfs_connections,omitempty"`
	Syslog     *syslog.Stats `json:"syslog,omitempty"`
}

var statsEvery = 10 * time.Second

type statsWriter struct {
	path   string
	tftp   *tftp.Server
	nfs    *nfs.Server
	syslog *syslog.Server
}

func (w *statsWriter) collect() Stats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := Stats{Time: time.Now().UTC(), PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.OpenFDs = len(ents)
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			n, _ := strconv.ParseInt(f[0], 10, 64)
			switch k {
			case "VmRSS":
				s.RSSBytes = n << 10
			case "Threads":
				s.Threads = int(n)
			}
		}
	}
	if w.tftp != nil {
		st := w.tftp.Stats()
		s.TFTP = &st
	}
	if w.nfs != nil {
		n := w.nfs.Conns()
		s.NFSConns = &n
	}
	if w.syslog != nil {
		st := w.syslog.Stats()
		s.Syslog = &st
	}
	return s
}

// run writes the stats until ctx ends, each time whole (renamed into
// place).
func (w *statsWriter) run(ctx context.Context, log *slog.Logger) {
	if err := os.MkdirAll(filepath.Dir(w.path), 0o755); err != nil {
		log.Warn("stats file disabled", "err", err)
		return
	}
	defer os.Remove(w.path)
	tk := time.NewTicker(statsEvery)
	defer tk.Stop()
	for {
		b, _ := json.MarshalIndent(w.collect(), "", "  ")
		renameio.WriteFile(w.path, append(b, '\n'), 0o644)
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

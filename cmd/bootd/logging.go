package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/lograte"
)

// setupLog makes the logger every verb writes to w (stderr): slog text or
// JSON at the chosen level, in the journal's own form when stderr is the
// journal, bounded per client and in total: every service logs per
// request, and any client on the cluster network may be hostile.
func (a *app) setupLog(w *os.File) {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(a.logLevel)) // a choice flag: always valid
	h := newLogHandler(w, a.logFormat, lvl, underJournal(os.Getenv("JOURNAL_STREAM"), w))
	a.logs = lograte.New(h, lograte.Limits{})
	a.log = slog.New(a.logs)
}

// newLogHandler writes format ("text" or "json") lines to w. For the
// journal it leaves out the time, which journald records itself, and puts
// the sd-daemon(3) priority first, so "journalctl -p err" finds errors.
func newLogHandler(w io.Writer, format string, lvl slog.Level, journal bool) slog.Handler {
	opts := &slog.HandlerOptions{Level: lvl}
	if !journal {
		if format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	s := &journalSink{out: w}
	if format == "json" {
		return journalHandler{s, slog.NewJSONHandler(&s.buf, opts)}
	}
	return journalHandler{s, slog.NewTextHandler(&s.buf, opts)}
}

// underJournal says whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM ("DEVICE:INODE", systemd.exec(5)) names it. The
// variable alone is not enough: it is inherited by processes whose stderr
// was redirected elsewhere.
func underJournal(env string, f *os.File) bool {
	dev, ino, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return dev == fmt.Sprint(st.Dev) && ino == fmt.Sprint(st.Ino)
}

// journalSink is where a journalHandler and those derived from it (With,
// WithGroup) format a line before writing it whole, priority first.
type journalSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

type journalHandler struct {
	sink  *journalSink
	inner slog.Handler // writes into sink.buf
}

// priority is the sd-daemon(3) prefix of a level.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

func (h journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	s := h.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	s.buf.WriteString(priority(r.Level))
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := s.out.Write(s.buf.Bytes())
	return err
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return journalHandler{h.sink, h.inner.WithAttrs(as)}
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	return journalHandler{h.sink, h.inner.WithGroup(name)}
}

package lograte

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(l Limits) (*slog.Logger, *Handler, *bytes.Buffer, *clock) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, nil), l)
	c := &clock{t: time.Unix(1e9, 0)}
	h.st.now = c.now
	return slog.New(h), h, &buf, c
}

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A client that loops on a request gets its burst of lines, then one a
// second, and the line that passes says how many were held back; other
// clients and the server's own lines are not held back with it.
func TestOneClientIsBounded(t *testing.T) {
	log, h, buf, c := newTest(Limits{PerClient: 1, Burst: 30, Total: 1000})
	a := log.With("ip", "10.0.0.5")
	for i := 0; i < 1000; i++ {
		a.Info("sent", "bytes", 1)
	}
	if n := len(lines(buf)); n != 30 {
		t.Fatalf("%d lines from one client at once, want its burst of 30", n)
	}
	log.Info("sent", "ip", "10.0.0.6")
	log.Error("index failed")
	if n := len(lines(buf)); n != 32 {
		t.Fatalf("another client's line or the server's own was held back: %d lines", n)
	}
	c.t = c.t.Add(5 * time.Second)
	buf.Reset()
	for i := 0; i < 10; i++ {
		a.Info("sent")
	}
	got := lines(buf)
	if len(got) != 5 {
		t.Fatalf("after 5 s: %d lines, want 5", len(got))
	}
	if !strings.Contains(got[0], "suppressed=970") || strings.Contains(got[1], "suppressed") {
		t.Errorf("held-back count: %q, %q", got[0], got[1])
	}
	if h.Dropped() != 975 {
		t.Errorf("Dropped = %d, want 975", h.Dropped())
	}
}

// Many clients at once (forged addresses, a storm) share the total.
func TestAllClientsAreBounded(t *testing.T) {
	log, _, buf, c := newTest(Limits{PerClient: 1, Burst: 5, Total: 10})
	for i := 0; i < 1000; i++ {
		log.Warn("bad request", "mac", fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256))
	}
	if n := len(lines(buf)); n != 100 {
		t.Fatalf("%d lines from 1000 clients, want the total burst of 100", n)
	}
	c.t = c.t.Add(time.Second)
	buf.Reset()
	for i := 0; i < 1000; i++ {
		log.Warn("bad request", "mac", fmt.Sprintf("52:54:00:01:%02x:%02x", i/256, i%256))
	}
	if n := len(lines(buf)); n != 10 {
		t.Fatalf("%d lines in the next second, want 10", n)
	}
}

// The address names the client, not the MAC it claims nor the port of its
// connection: a client cannot get a fresh bucket by changing either.
func TestClientIsTheAddress(t *testing.T) {
	log, _, buf, _ := newTest(Limits{PerClient: 1, Burst: 3, Total: 1000})
	ip := log.With("ip", "10.0.0.5")
	for i := 0; i < 10; i++ {
		ip.With("mac", fmt.Sprintf("52:54:00:00:00:%02x", i)).Info("sent")
	}
	for i := 0; i < 10; i++ {
		log.Info("connection", "client", fmt.Sprintf("10.0.0.7:%d", 700+i))
	}
	if n := len(lines(buf)); n != 6 {
		t.Fatalf("%d lines, want 3 for each of two clients", n)
	}
}

// Past maxClients, new clients share one bucket: memory stays bounded.
func TestForgedAddressesShareABucket(t *testing.T) {
	old := maxClients
	maxClients = 100
	defer func() { maxClients = old }()
	log, h, _, _ := newTest(Limits{PerClient: 1, Burst: 2, Total: 1e6})
	for i := 0; i < 10000; i++ {
		log.Info("x", "ip", fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
	}
	if n := len(h.st.clients); n > 101 {
		t.Fatalf("%d clients remembered, want at most 101", n)
	}
	if h.Dropped() == 0 {
		t.Fatal("a flood of new addresses was never held back")
	}
}

func TestEnabledFollowsTheLevel(t *testing.T) {
	h := New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}), Limits{})
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Fatal("levels not passed through")
	}
}

package syslog

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootd/bootd/events"
)

// TestLinesReachNodeRecords: what the syslog receiver keeps goes to
// OnLine too, escaped, one line at a time.
func TestLinesReachNodeRecords(t *testing.T) {
	var mu sync.Mutex
	var got []string
	h := start(t, Config{Allow: loopback, OnLine: func(src netip.Addr, line string) {
		mu.Lock()
		got = append(got, src.String()+" "+line)
		mu.Unlock()
	}})
	c := h.dial(t, "127.0.0.1")
	fmt.Fprint(c, "<13>Nov 25 10:00:00 node01 app: one\n<13>Nov 25 10:00:01 node01 app: two\x1b[2J\n")
	c.Close()
	waitFor(t, "two lines", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if got[0] != "127.0.0.1 <13>Nov 25 10:00:00 node01 app: one" || !strings.HasSuffix(got[1], "two#033[2J") {
		t.Errorf("lines: %q", got)
	}
}

// startNetconsole runs a receiver on a loopback port feeding log.
func startNetconsole(t *testing.T, log *events.Log, rate int) (*Netconsole, string) {
	t.Helper()
	n := NewNetconsole(NetconsoleConfig{Allow: loopback, RatePerSource: rate,
		Sink: func(src netip.Addr, text string, tm time.Time) bool { return log.Console(src.String(), text, tm) }})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, pc) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, pc.LocalAddr().String()
}

func sendFrom(t *testing.T, src, dst string, payloads ...string) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range payloads {
		c.Write([]byte(p))
	}
}

func TestNetconsoleKeepsKnownNodesLines(t *testing.T) {
	log := events.New(16)
	log.Record(events.Event{MAC: "52:54:00:bd:00:01", IP: "127.0.0.1", Stage: events.StageDHCP})
	n, addr := startNetconsole(t, log, 0)
	sendFrom(t, "127.0.0.1", addr, "[    0.000000] Linux version 6.12.117", " (debian-kernel)\n[    0.1] second\n")
	sendFrom(t, "127.0.0.3", addr, "from no node\n") // allowed, but no node is there
	waitFor(t, "the datagrams", func() bool { s := n.Stats(); return s.Datagrams == 2 && s.Unknown == 1 })
	rec, _ := log.Node("52:54:00:bd:00:01")
	if len(rec.Console) != 2 || rec.Console[0].Text != "[    0.000000] Linux version 6.12.117 (debian-kernel)" {
		t.Errorf("console: %q", rec.Console)
	}
}

// TestNetconsoleFloodIsBounded: a node that floods its console keeps at
// most its rate and its record's bounds; another node's lines still land.
func TestNetconsoleFloodIsBounded(t *testing.T) {
	log := events.NewWithLimits(16, events.Limits{Lines: 100, LineBytes: 16 << 10})
	log.Record(events.Event{MAC: "52:54:00:bd:00:01", IP: "127.0.0.1", Stage: events.StageDHCP})
	log.Record(events.Event{MAC: "52:54:00:bd:00:02", IP: "127.0.0.2", Stage: events.StageDHCP})
	n, addr := startNetconsole(t, log, 64<<10)
	line := strings.Repeat("x", 1000) + "\n"
	flood := make([]string, 2000) // 2 MB in well under a second
	for i := range flood {
		flood[i] = line
	}
	sendFrom(t, "127.0.0.1", addr, flood...)
	sendFrom(t, "127.0.0.2", addr, "quiet node\n")
	waitFor(t, "the quiet node's line", func() bool { r, _ := log.Node("127.0.0.2"); return len(r.Console) == 1 })
	time.Sleep(100 * time.Millisecond)
	s := n.Stats()
	if s.OverRate == 0 || s.Bytes > 2*64<<10+uint64(len("quiet node\n")) {
		t.Errorf("rate not enforced: %+v", s)
	}
	r, _ := log.Node("127.0.0.1")
	size := 0
	for _, l := range r.Console {
		size += len(l.Text)
	}
	if len(r.Console) > 100 || size > 16<<10 {
		t.Errorf("record holds %d lines, %d bytes", len(r.Console), size)
	}
}

// TestNetconsoleSourceTableBounded: datagrams from more addresses in one
// second than the rate table holds (forged sources) are dropped, not
// remembered; the next second starts afresh.
func TestNetconsoleSourceTableBounded(t *testing.T) {
	n := NewNetconsole(NetconsoleConfig{})
	now := time.Now()
	kept := 0
	for i := range maxSources + 1000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if n.within(a, 100, now) {
			kept++
		}
	}
	if kept != maxSources || len(n.used) != maxSources {
		t.Errorf("kept %d, table %d; want %d", kept, len(n.used), maxSources)
	}
	if !n.within(netip.MustParseAddr("10.99.0.1"), 100, now.Add(time.Second)) || len(n.used) != 1 {
		t.Errorf("a new second: table %d", len(n.used))
	}
}

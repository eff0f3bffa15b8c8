package syslog

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The counters follow what really reached the receiver: lines and bytes
// written, and each way of being turned away.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := start(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Metrics: NewMetrics(reg),
		Limits: Limits{MaxLine: 16, ConnsPerSource: 1}})
	c := h.dial(t, "127.0.0.1")
	fmt.Fprint(c, "<13>hello\n")                      // 10 bytes written
	fmt.Fprint(c, "<13>a line longer than sixteen\n") // cut to 16: 17 bytes
	waitFor(t, "the connection to be counted", func() bool {
		return testutil.ToFloat64(h.s.m.conns) == 1 && h.s.Stats().Messages == 2
	})
	if over := h.dial(t, "127.0.0.1"); !closedByServer(over) {
		t.Error("a second connection from one source was kept")
	}
	h.sendUDP(t, "127.0.0.1", "<13>udp\tx")   // "<13>udp#011x": 13 bytes
	h.sendUDP(t, "127.0.0.2", "<13>intruder") // outside Allow
	if stranger := h.dial(t, "127.0.0.2"); !closedByServer(stranger) {
		t.Error("a connection from outside Allow was kept")
	}
	fmt.Fprint(c, "9999999 x") // not syslog: the connection is closed
	if !closedByServer(c) {
		t.Error("a connection announcing a 10 MB frame stayed open")
	}

	want := `
# HELP bootd_syslog_bytes_total Bytes written to node logs (escaped lines with their newlines).
# TYPE bootd_syslog_bytes_total counter
bootd_syslog_bytes_total 40
# HELP bootd_syslog_connections Syslog TCP connections open.
# TYPE bootd_syslog_connections gauge
bootd_syslog_connections 0
# HELP bootd_syslog_dropped_total Node log messages, or TCP connections, not kept in full, by reason.
# TYPE bootd_syslog_dropped_total counter
bootd_syslog_dropped_total{reason="frame_too_long"} 1
bootd_syslog_dropped_total{reason="not_allowed"} 2
bootd_syslog_dropped_total{reason="too_long"} 1
bootd_syslog_dropped_total{reason="too_many_conns"} 1
bootd_syslog_dropped_total{reason="write_failed"} 0
# HELP bootd_syslog_lines_total Messages written to node logs, one line each.
# TYPE bootd_syslog_lines_total counter
bootd_syslog_lines_total 3
`
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = testutil.GatherAndCompare(reg, strings.NewReader(want)); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

// A nil *Metrics, what servers without one have, counts nothing and does
// not panic; NewMetrics(nil) makes collectors without registering them.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.wrote(1)
	m.drop(dropTooLong)
	m.connOpened()
	m.connClosed()
	if m := NewMetrics(nil); testutil.ToFloat64(m.lines) != 0 {
		t.Error("a new counter is not zero")
	}
}

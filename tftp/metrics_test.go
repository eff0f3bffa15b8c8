package tftp

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Transfers are counted by kind and result as clients see them, with
// their bytes and, for completed ones, their times.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	// One transfer per address: the last part holds one to be refused.
	f := start(t, func(c *Config) { c.Metrics, c.Limits = m, Limits{PerClient: 1} })
	sizes := map[string]int{}
	for _, name := range []string{"pxelinux.0", "pxelinux.cfg/01-52-54-00-00-00-01", "images/img/3/vmlinuz", "images/img/3/initrd.img"} {
		b, err := get(t, f.addr, name, 1468)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sizes[name] = len(b)
		// The slot is free once the server has the last ACK, a moment
		// after the client has its data.
		waitIdle(t, f.srv)
	}
	wrq := rrq("pxelinux.0", "octet")
	wrq[1] = opWRQ
	for _, req := range [][]byte{rrq("pxelinux.cfg/C0A80A0F", "octet"), rrq("../../etc/passwd", "octet"), wrq} {
		c := newRawClient(t, f.addr)
		c.send(req)
		c.mustRecv(opERROR)
		waitIdle(t, f.srv) // the ERROR comes before the slot is free
	}
	// A PXE ROM learns the size, then ends the transfer.
	c := newRawClient(t, f.addr)
	c.send(rrq("pxelinux.0", "octet", "tsize", "0"))
	c.mustRecv(opOACK)
	c.send(appendError(nil, 8, "tsize only"))
	waitIdle(t, f.srv)
	// A transfer in progress (its one block not yet acknowledged; the
	// 5 s timeout keeps it from being resent meanwhile) holds the
	// address's only slot: the next request is refused.
	held := newRawClient(t, f.addr)
	held.send(rrq("pxelinux.0", "octet", "timeout", "5"))
	held.mustRecv(opOACK)
	held.ack(0)
	held.mustRecv(opDATA)
	if n := testutil.ToFloat64(m.active); n != 1 {
		t.Errorf("bootd_tftp_active_transfers = %v during a transfer, want 1", n)
	}
	c = newRawClient(t, f.addr)
	c.send(rrq("pxelinux.0", "octet"))
	if _, msg := c.mustRecv(opERROR); !strings.Contains(string(msg), "too many transfers") {
		t.Errorf("refusal %q", msg)
	}
	held.send(appendError(nil, 0, "enough"))
	waitIdle(t, f.srv)

	want := `
# HELP bootd_tftp_transfers_total TFTP read requests, by kind of file and result (refused: turned away by limits, rate or policy before any transfer).
# TYPE bootd_tftp_transfers_total counter
bootd_tftp_transfers_total{kind="config",result="aborted"} 0
bootd_tftp_transfers_total{kind="config",result="failed"} 0
bootd_tftp_transfers_total{kind="config",result="not_found"} 0
bootd_tftp_transfers_total{kind="config",result="ok"} 1
bootd_tftp_transfers_total{kind="config",result="refused"} 0
bootd_tftp_transfers_total{kind="initrd",result="aborted"} 0
bootd_tftp_transfers_total{kind="initrd",result="failed"} 0
bootd_tftp_transfers_total{kind="initrd",result="not_found"} 0
bootd_tftp_transfers_total{kind="initrd",result="ok"} 1
bootd_tftp_transfers_total{kind="initrd",result="refused"} 0
bootd_tftp_transfers_total{kind="kernel",result="aborted"} 0
bootd_tftp_transfers_total{kind="kernel",result="failed"} 0
bootd_tftp_transfers_total{kind="kernel",result="not_found"} 0
bootd_tftp_transfers_total{kind="kernel",result="ok"} 1
bootd_tftp_transfers_total{kind="kernel",result="refused"} 0
bootd_tftp_transfers_total{kind="loader",result="aborted"} 2
bootd_tftp_transfers_total{kind="loader",result="failed"} 0
bootd_tftp_transfers_total{kind="loader",result="not_found"} 0
bootd_tftp_transfers_total{kind="loader",result="ok"} 1
bootd_tftp_transfers_total{kind="loader",result="refused"} 0
bootd_tftp_transfers_total{kind="other",result="aborted"} 0
bootd_tftp_transfers_total{kind="other",result="failed"} 0
bootd_tftp_transfers_total{kind="other",result="not_found"} 1
bootd_tftp_transfers_total{kind="other",result="ok"} 0
bootd_tftp_transfers_total{kind="other",result="refused"} 3
# HELP bootd_tftp_active_transfers TFTP transfers in progress.
# TYPE bootd_tftp_active_transfers gauge
bootd_tftp_active_transfers 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "bootd_tftp_transfers_total", "bootd_tftp_active_transfers"); err != nil {
		t.Error(err)
	}
	// Bytes: every byte of the completed transfers, the held one's block,
	// none for the one ended after the OACK. Loopback loses nothing, but
	// a loaded machine may be late with an ACK and have a block resent.
	loader := int(testutil.ToFloat64(m.bytes[kindLoader]))
	if l := sizes["pxelinux.0"]; loader != 2*l && loader != 3*l {
		t.Errorf("loader bytes %d, want %d (or %d with one resend)", loader, 2*l, 3*l)
	}
	for k, name := range map[kind]string{kindConfig: "pxelinux.cfg/01-52-54-00-00-00-01", kindKernel: "images/img/3/vmlinuz", kindInitrd: "images/img/3/initrd.img"} {
		if got, size := int(testutil.ToFloat64(m.bytes[k])), sizes[name]; got < size || got > size+10*1468 {
			t.Errorf("%s bytes %d, want %d (or a few blocks more for resends)", kindNames[k], got, size)
		}
	}
	if got := testutil.ToFloat64(m.bytes[kindOther]); got != 0 {
		t.Errorf("other bytes %v, want 0", got)
	}
	// Times: one each for the completed transfers, none for the others.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	times := map[string]uint64{}
	for _, mf := range families {
		if mf.GetName() == "bootd_tftp_transfer_duration_seconds" {
			for _, s := range mf.GetMetric() {
				times[s.GetLabel()[0].GetValue()] = s.GetHistogram().GetSampleCount()
			}
		}
	}
	if want := map[string]uint64{"loader": 1, "config": 1, "kernel": 1, "initrd": 1, "other": 0}; !maps.Equal(times, want) {
		t.Errorf("durations observed %v, want %v", times, want)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

// Servers without metrics (a nil *Metrics) count nothing and do not
// panic; NewMetrics(nil) makes collectors without registering them.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.sent("", nil, 1, time.Second)
	m.turnedAway(resultRefused)
	m.started()
	m.finished()
	if m := NewMetrics(nil); testutil.ToFloat64(m.active) != 0 {
		t.Error("a new gauge is not zero")
	}
}

package nfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// nonzero returns the series of a metric family that are not zero, keyed
// by their label values in the order of the labels' names, joined with
// "/": a counter's or gauge's value, a histogram's number of observations.
func nonzero(t *testing.T, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			var vals []string
			for _, l := range s.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			if v != 0 {
				out[strings.Join(vals, "/")] = v
			}
		}
	}
	return out
}

// dialFrom connects to addr from a loopback source address.
func dialFrom(t *testing.T, src, addr string) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

// Calls are counted by program, procedure and status as a client sees
// them, with their times, the data READ returns, and the connections
// open and refused.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, func(c *Config) {
		c.Metrics = m
		c.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/29")}
		c.MaxConns, c.MaxConnsPerClient = 3, 2
	})
	rc := dialFrom(t, "127.0.0.1", addr)
	root, st := rc.mount("/demo")
	if st != mnt3OK {
		t.Fatalf("MNT: %d", st)
	}
	if _, st := rc.mount("/nosuch"); st == mnt3OK {
		t.Fatal("MNT of a missing image succeeded")
	}
	rc.lookupPath(root, "data")
	big, _ := rc.lookupPath(root, "data", "big")
	if st := rc.nfs(procLookup, root, "missing").u32(); st != nfs3ErrNoEnt {
		t.Errorf("LOOKUP of a missing name: %d", st)
	}
	r := rc.nfs(procRead, big, uint64(1000), uint32(100000))
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("READ: %d", st)
	}
	readPostOp(r)
	if n := r.u32(); n != 100000 {
		t.Fatalf("READ returned %d bytes", n)
	}
	if st := rc.nfs(procRead, root, uint64(0), uint32(10)).u32(); st != nfs3ErrIsDir {
		t.Errorf("READ of a directory: %d", st)
	}
	if _, st := rc.getattr(root); st != nfs3OK {
		t.Errorf("GETATTR: %d", st)
	}
	if st := rc.nfs(procWrite, big, uint64(0), uint32(1), uint32(0), []byte("x")).u32(); st != nfs3ErrROFS {
		t.Errorf("WRITE: %d", st)
	}
	for _, c := range []struct{ prog, vers, proc, stat uint32 }{
		{progNFS, 3, 22, acceptProcUnavail},
		{progMount, 3, mntExport, acceptSuccess},
		{progNFSACL, 3, aclProcNull, acceptSuccess},
		{progNFS, 3, procNull, acceptSuccess},
		{100021, 4, 0, acceptProgUnavail}, // NLM
		{progNFS, 4, 0, acceptProgMismatch},
	} {
		if rep := rc.call(c.prog, c.vers, c.proc, nil); rep.stat != c.stat {
			t.Errorf("program %d version %d procedure %d: %+v", c.prog, c.vers, c.proc, rep)
		}
	}
	// A record that is no call gets a reply, but is no procedure.
	odd := dialFrom(t, "127.0.0.1", addr)
	odd.c.Write(finishReply(enc(uint32(0), uint32(7), uint32(msgReply))))
	if _, err := readRecord(odd.br, nil, nil); err != nil {
		t.Fatalf("no answer to a reply sent as a call: %v", err)
	}

	// Connections: 127.0.0.1 has two, its third is refused; 127.0.0.2
	// takes the last of three, its second is one too many; 127.0.0.9 is
	// not allowed.
	if n := testutil.ToFloat64(m.conns); n != 2 {
		t.Errorf("bootd_nfs_connections = %v with two open", n)
	}
	if c := dialFrom(t, "127.0.0.1", addr); !expectClosed(t, c.c, 2*time.Second) {
		t.Error("a third connection from one address was kept")
	}
	b1 := dialFrom(t, "127.0.0.2", addr)
	b1.call(progNFS, 3, procNull, nil)
	for _, src := range []string{"127.0.0.2", "127.0.0.9"} {
		if c := dialFrom(t, src, addr); !expectClosed(t, c.c, 2*time.Second) {
			t.Errorf("a connection from %s was kept", src)
		}
	}
	secure := serve(t, fx.store, func(c *Config) { c.Metrics, c.SecurePorts = m, true })
	if c := dialFrom(t, "127.0.0.1", secure); !expectClosed(t, c.c, 2*time.Second) {
		t.Error("a connection from an unprivileged port was kept with secure_ports on")
	}
	// A record larger than any call closes its connection.
	b1.c.Write([]byte{0x80, 0x41, 0, 0}) // last fragment, 4 MiB + 64 KiB
	if !expectClosed(t, b1.c, 2*time.Second) {
		t.Error("a connection announcing an oversized record was kept")
	}
	rc.c.Close()
	odd.c.Close()
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(m.conns) != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}

	for name, want := range map[string]map[string]float64{
		"bootd_nfs_operations_total": { // procedure/program/status
			"MNT/mount/ok": 1, "MNT/mount/error": 1, "EXPORT/mount/ok": 1,
			"NULL/nfs/ok": 2, "LOOKUP/nfs/ok": 3, "LOOKUP/nfs/error": 1, "READ/nfs/ok": 1, "READ/nfs/error": 1,
			"GETATTR/nfs/ok": 1, "WRITE/nfs/error": 1, "other/nfs/error": 1, "NULL/nfsacl/ok": 1,
		},
		"bootd_nfs_operation_duration_seconds": {
			"MNT": 2, "EXPORT": 1, "NULL": 3, "LOOKUP": 4, "READ": 2, "GETATTR": 1, "WRITE": 1, "other": 1,
		},
		"bootd_nfs_read_bytes_total": {"": 100000},
		"bootd_nfs_connections":      {},
		"bootd_nfs_connections_refused_total": {
			"too_many_per_client": 1, "too_many": 1, "not_allowed": 1, "insecure_port": 1,
		},
		"bootd_nfs_errors_total": {"unsupported": 2, "decode": 1, "record_too_large": 1},
	} {
		if got := nonzero(t, reg, name); !maps.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", name, got, want)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

// What ends a connection's reads is told apart; a client closing it is
// no error.
func TestMetricsReadErrors(t *testing.T) {
	m := NewMetrics(nil)
	timeout := fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)
	m.readFailed(io.EOF, false)
	m.readFailed(fmt.Errorf("read: %w", net.ErrClosed), true)
	m.readFailed(timeout, false)
	m.readFailed(timeout, true)
	m.readFailed(errRecordTooLarge, true)
	m.readFailed(errors.New("connection reset by peer"), true)
	m.writeFailed(timeout)
	m.writeFailed(errors.New("broken pipe"))
	for k, want := range map[failure]float64{failIdleTimeout: 1, failRecordTimeout: 1, failRecordTooLarge: 1, failRead: 1,
		failWriteTimeout: 1, failWrite: 1, failAccept: 0, failDecode: 0, failUnsupported: 0} {
		if got := testutil.ToFloat64(m.errs[k]); got != want {
			t.Errorf("%s: %v, want %v", failureNames[k], got, want)
		}
	}
}

// Servers without metrics (a nil *Metrics) count nothing and do not
// panic.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.call(nil, nil, time.Now())
	m.read(1)
	m.connOpened()
	m.connClosed()
	m.refused(whyTooMany)
	m.failed(failAccept)
	m.readFailed(io.ErrUnexpectedEOF, false)
	m.writeFailed(io.ErrShortWrite)
}

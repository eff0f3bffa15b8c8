package nfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// expectClosed says whether the server closed c within wait.
func expectClosed(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		return true // EOF or reset
	}
}

// A record mark promising 4 MiB makes the server hold nothing until the
// bytes come: 40 such connections took RSS from 9 to 175 MB before.
func TestPromisedRecordCostsNothing(t *testing.T) {
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, func(c *Config) { c.MaxConnsPerClient = 64 })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	for i := 0; i < 40; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{0x80, 0x40, 0x00, 0x00, 1, 2, 3, 4}) // last fragment, 4 MiB; 4 bytes of it
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("40 connections that promised 4 MiB records grew the heap by %d MiB", grew>>20)
	}
}

// Connections are capped per address and in all; the ones over a cap are
// closed at once and the others keep working.
func TestConnectionCaps(t *testing.T) {
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, func(c *Config) { c.MaxConnsPerClient = 2 })
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.call(progNFS, 3, procNull, nil)
	b.call(progNFS, 3, procNull, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !expectClosed(t, c, 2*time.Second) {
		t.Errorf("a third connection from one address stayed open with a cap of 2")
	}
	if rep := a.call(progNFS, 3, procNull, nil); rep.stat != acceptSuccess {
		t.Errorf("a connection within the cap: %+v", rep)
	}
	// A closed connection frees its slot.
	b.c.Close()
	time.Sleep(200 * time.Millisecond)
	d := dialRaw(t, addr)
	if rep := d.call(progNFS, 3, procNull, nil); rep.stat != acceptSuccess {
		t.Errorf("after one closed: %+v", rep)
	}
}

// A connection that says nothing, or trickles a record, is dropped.
func TestSilentConnectionsDropped(t *testing.T) {
	old := [2]time.Duration{idleTimeout, recordTimeout}
	idleTimeout, recordTimeout = 400*time.Millisecond, 600*time.Millisecond
	defer func() { idleTimeout, recordTimeout = old[0], old[1] }()
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, nil)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if !expectClosed(t, idle, 3*time.Second) {
		t.Errorf("an idle connection was kept past the idle timeout")
	}
	trickle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer trickle.Close()
	trickle.Write([]byte{0x80, 0, 0, 100})
	closed := make(chan bool)
	go func() { closed <- expectClosed(t, trickle, 3*time.Second) }()
	for i := 0; i < 25; i++ {
		time.Sleep(100 * time.Millisecond)
		if _, err := trickle.Write([]byte{0}); err != nil {
			break
		}
	}
	if !<-closed {
		t.Errorf("a record trickled a byte at a time was kept past the record timeout")
	}
}

// flakyListener fails Accept with the errors a loaded master gives
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) before it accepts.
type flakyListener struct {
	net.Listener
	fails []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.fails) > 0 {
		err := l.fails[0]
		l.fails = l.fails[1:]
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: err}
	}
	return l.Listener.Accept()
}

// Running out of descriptors or memory for a moment does not stop the
// export: before, any accept error but a timeout ended Serve (and bootd).
func TestAcceptErrorsDoNotStop(t *testing.T) {
	fx := makeFixture(t, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln, fails: []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM}}
	s := New(Config{Store: fx.store, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, fl) }()
	rc := dialRaw(t, ln.Addr().String())
	rc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := rc.send(progNFS, 3, procNull, nil); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	if _, err := rc.c.Read(b[:]); err != nil {
		t.Errorf("no answer after accept errors: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned after accept errors: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// A generation directory removed and made again under the same number is
// another tree: its old index and open files are dropped, so GETATTR and
// READ describe the new files (before: GETATTR said the old size and READ
// returned the new bytes cut to it).
func TestRecreatedGenerationReindexed(t *testing.T) {
	old := sweepEach
	sweepEach = 100 * time.Millisecond
	defer func() { sweepEach = old }()
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, _ := rc.mount("/demo/1")
	fh, a := rc.lookupPath(root, "etc", "hostname")
	if a.size != 5 {
		t.Fatalf("etc/hostname size %d", a.size)
	}
	rc.nfs(procRead, fh, uint64(0), uint32(100)) // opens and caches the file
	gen := fx.store.GenDir("demo", 1)
	if err := os.RemoveAll(gen); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(gen, "root", "etc"), 0o755)
	os.MkdirAll(filepath.Join(gen, "boot"), 0o755)
	os.WriteFile(filepath.Join(gen, "root", "etc", "hostname"), []byte("a-longer-name\n"), 0o644)
	time.Sleep(400 * time.Millisecond)
	root, _ = rc.mount("/demo/1")
	fh2, a2 := rc.lookupPath(root, "etc", "hostname")
	if a2.size != 14 {
		t.Errorf("after the generation was made again: etc/hostname size %d, want 14", a2.size)
	}
	r := rc.nfs(procRead, fh2, uint64(0), uint32(100))
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("READ: status %d", st)
	}
	readPostOp(r)
	r.u32()
	r.u32()
	if got := string(r.opaque(100)); got != "a-longer-name\n" {
		t.Errorf("READ after the generation was made again: %q", got)
	}
	if st := rc.nfs(procGetattr, fh).u32(); st == nfs3OK && !bytes.Equal(fh, fh2) {
		t.Errorf("a handle of the old tree still resolves")
	}
}

// At most maxTrees generation indexes are kept, however many generations
// clients name.
func TestIndexesBounded(t *testing.T) {
	oldEach, oldMax := sweepEach, maxTrees
	sweepEach, maxTrees = 100*time.Millisecond, 2
	defer func() { sweepEach, maxTrees = oldEach, oldMax }()
	fx := makeFixture(t, false)
	for g := 2; g <= 5; g++ {
		os.MkdirAll(filepath.Join(fx.store.RootDir("demo", g), "etc"), 0o755)
	}
	addr, s := serveS(t, fx.store, nil)
	rc := dialRaw(t, addr)
	for g := 1; g <= 5; g++ {
		if _, st := rc.mount(fmt.Sprintf("/demo/%d", g)); st != mnt3OK {
			t.Fatalf("MNT /demo/%d: %d", g, st)
		}
	}
	time.Sleep(400 * time.Millisecond)
	s.mu.RLock()
	n := len(s.trees)
	s.mu.RUnlock()
	if n > 2 {
		t.Errorf("%d generation indexes kept, want at most 2", n)
	}
	// A dropped index is built again on use, with the same handles.
	root, st := rc.mount("/demo/1")
	if st != mnt3OK {
		t.Fatalf("MNT /demo/1 again: %d", st)
	}
	if _, a := rc.lookupPath(root, "etc", "hostname"); a.size != 5 {
		t.Errorf("after re-indexing: size %d", a.size)
	}
}

// A thousand nodes keep their connections open between calls: an idle
// connection must cost the server a few KiB, not the buffers its last
// calls used. Before, each held a 64 KiB reader and a pooled buffer that
// a READ's reply had grown (bench/storm.sh 1000 peaked at 1.2 GiB).
func TestIdleConnectionsAreCheap(t *testing.T) {
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, func(c *Config) { c.MaxConns, c.MaxConnsPerClient = 1000, 1000 })
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // and the pools' victims
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	const n = 200
	before := heap()
	for i := 0; i < n; i++ {
		rc := dialRaw(t, addr)
		root, _ := rc.mount("/demo/1")
		big, _ := rc.lookupPath(root, "data", "big")
		for off := uint64(0); off < 512<<10; off += 128 << 10 {
			if st := rc.nfs(procRead, big, off, uint32(128<<10)).u32(); st != nfs3OK {
				t.Fatalf("READ: status %d", st)
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // the last replies' buffers go back
	per := (int64(heap()) - int64(before)) / n
	t.Logf("%d idle connections: %d bytes of heap each (this test's client included)", n, per)
	if per > 24<<10 {
		t.Errorf("an idle connection holds %d KiB of heap, want a few", per>>10)
	}
}

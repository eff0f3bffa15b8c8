package tftp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pin/tftp/v3/netascii"
)

// shorten sets the first-ACK wait and the silence limit for one test.
func shorten(t *testing.T, first, silence time.Duration) {
	fw, ms := firstWait, maxSilence
	firstWait, maxSilence = first, silence
	t.Cleanup(func() { firstWait, maxSilence = fw, ms })
}

// closedOrSilent says whether a transfer's socket is gone: a late ACK to
// it brings nothing, or ICMP port unreachable.
func closedOrSilent(c *rawClient, ack uint16) bool {
	// What was sent before (resends) is not the answer.
	for {
		if _, _, _, err := c.recv(50 * time.Millisecond); err != nil {
			break
		}
	}
	c.ack(ack)
	op, block, _, err := c.recv(700 * time.Millisecond)
	if err == nil {
		c.t.Logf("the transfer answered ACK %d with opcode %d block %d", ack, op, block)
	}
	return err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || isRefused(err))
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// A request that is never acknowledged gets its first block only a few
// times, whatever its timeout option, and then its socket is closed:
// before, timeout=255 held it ~38 minutes and a bare RRQ got block 1 nine
// times (244× the request's bytes).
func TestNoFirstAckGivesUp(t *testing.T) {
	shorten(t, 200*time.Millisecond, 30*time.Second)
	f := start(t)
	c := newRawClient(t, f.addr)
	c.send(rrq("images/img/3/vmlinuz", "octet"))
	sends := 0
	for {
		op, b, _, err := c.recv(1500 * time.Millisecond)
		if err != nil {
			break
		}
		if op != opDATA || b != 1 {
			t.Fatalf("opcode %d block %d, want DATA 1", op, b)
		}
		sends++
	}
	if sends > firstTries {
		t.Errorf("block 1 sent %d times to a client that never acknowledged, want at most %d", sends, firstTries)
	}
	if !closedOrSilent(c, 1) {
		t.Errorf("the abandoned transfer still answers")
	}

	// With the client's timeout option at its maximum.
	c = newRawClient(t, f.addr)
	c.send(rrq("images/img/3/vmlinuz", "netascii", "timeout", "255", "blksize", "1024"))
	c.mustRecv(opOACK)
	time.Sleep(time.Duration(firstTries)*firstWait + 300*time.Millisecond)
	if !closedOrSilent(c, 0) {
		t.Errorf("a never-acknowledged OACK with timeout=255 still holds its transfer")
	}
	waitIdle(t, f.srv)
}

// A client that stops talking mid-transfer is dropped after maxSilence,
// even with timeout=255.
func TestSilentClientDropped(t *testing.T) {
	shorten(t, 3*time.Second, 800*time.Millisecond)
	f := start(t)
	c := newRawClient(t, f.addr)
	c.send(rrq("images/img/3/vmlinuz", "octet", "timeout", "255"))
	c.mustRecv(opOACK)
	c.ack(0)
	c.mustRecv(opDATA)
	c.ack(1)
	c.mustRecv(opDATA)
	time.Sleep(maxSilence + 400*time.Millisecond)
	if !closedOrSilent(c, 2) {
		t.Errorf("a transfer silent for longer than %v still answers", maxSilence)
	}
	waitIdle(t, f.srv)
}

func waitIdle(t *testing.T, s *Server) {
	t.Helper()
	for i := 0; i < 50 && s.Stats().Transfers != 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if n := s.Stats().Transfers; n != 0 {
		t.Errorf("%d transfers still counted", n)
	}
}

// Transfers are capped per source address and in all; the requests over
// a cap get an ERROR from the server port and no transfer.
func TestTransferCaps(t *testing.T) {
	f := start(t, func(c *Config) { c.Limits = Limits{PerClient: 3, Transfers: 5} })
	count := func(clients []*rawClient) (data, refused int) {
		for _, c := range clients {
			op, _, _, err := c.recv(2 * time.Second)
			switch {
			case err != nil:
				t.Fatalf("no answer: %v", err)
			case op == opDATA:
				data++
			case op == opERROR:
				refused++
			}
		}
		return
	}
	var held []*rawClient
	for i := 0; i < 5; i++ {
		c := newRawClient(t, f.addr)
		c.send(rrq("images/img/3/vmlinuz", "octet"))
		held = append(held, c)
	}
	if data, refused := count(held); data != 3 || refused != 2 {
		t.Errorf("5 transfers from one address: %d started, %d refused; want 3 and 2", data, refused)
	}
	var others []*rawClient
	for i := 2; i <= 3; i++ {
		c := newRawClientFrom(t, f.addr, net.IPv4(127, 0, 0, byte(i)))
		c.send(rrq("images/img/3/vmlinuz", "octet"))
		others = append(others, c)
	}
	if data, refused := count(others); data != 2 || refused != 0 {
		t.Errorf("2 more from other addresses with 3 held: %d started, %d refused; want 2 and 0", data, refused)
	}
	if st := f.srv.Stats(); st.Transfers != 5 {
		t.Errorf("Stats().Transfers = %d, want 5", st.Transfers)
	}
	// With every slot taken, a node that comes now is not refused (a
	// loader gives up on an ERROR): it is not answered, and its
	// retransmission is served once a slot is free.
	late := newRawClientFrom(t, f.addr, net.IPv4(127, 0, 0, 4))
	late.send(rrq("images/img/3/vmlinuz", "octet"))
	if op, _, _, err := late.recv(time.Second); err == nil {
		t.Fatalf("a request with every slot taken was answered (opcode %d), want silence", op)
	}
	for _, c := range append(held[:3], others...) {
		c.send(appendError(nil, 0, "done"))
	}
	waitIdle(t, f.srv)
	late.send(rrq("images/img/3/vmlinuz", "octet"))
	late.mustRecv(opDATA)
	late.send(appendError(nil, 0, "done"))
	waitIdle(t, f.srv)
	c := newRawClient(t, f.addr)
	c.send(rrq("pxelinux.cfg/default", "octet"))
	c.mustRecv(opDATA)
}

// Requests from one address over its rate are dropped unanswered.
func TestRequestRate(t *testing.T) {
	f := start(t, func(c *Config) { c.Limits = Limits{Rate: 5} })
	c := newRawClient(t, f.addr)
	for i := 0; i < 40; i++ {
		c.send(rrq("no/such/file", "octet"))
	}
	answers := 0
	for {
		if _, _, _, err := c.recv(500 * time.Millisecond); err != nil {
			break
		}
		answers++
	}
	// A burst of twice the rate, plus what refills during the test.
	if answers < 5 || answers > 14 {
		t.Errorf("40 requests at once at rate 5/s: %d answered, want about 10", answers)
	}
}

// The limiter forgets idle sources, so forged addresses leave nothing.
func TestLimiterForgets(t *testing.T) {
	l := newLimiter(Limits{})
	now := time.Now()
	for i := 0; i < 5000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if l.admit(ip, now) != admitted {
			t.Fatalf("request %d refused", i)
		}
		l.release(ip)
	}
	l.admit(netip.MustParseAddr("10.9.9.9"), now.Add(time.Minute))
	if len(l.srcs) != 1 || l.total != 1 {
		t.Errorf("after a minute: %d sources, %d transfers; want 1 and 1", len(l.srcs), l.total)
	}
	// Within one sweep interval, forged addresses fill at most maxSources
	// entries; the ones past it are turned away until the table drains.
	old := maxSources
	maxSources = 100
	defer func() { maxSources = old }()
	l = newLimiter(Limits{})
	refused := 0
	for i := 0; i < 1000; i++ {
		if l.admit(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), now) == throttled {
			refused++
		}
	}
	if len(l.srcs) > 100 || refused != 900 {
		t.Errorf("1000 forged addresses at once: %d remembered, %d turned away; want at most 100 and 900", len(l.srcs), refused)
	}
}

// Netascii blocks are converted as they are sent, from the one cached
// copy: 16 never-acknowledged netascii requests for a 3.9 MB file used to
// hold 16 converted copies (397 MB RSS for an initrd).
func TestNetasciiCostsNoCopy(t *testing.T) {
	f := start(t, func(c *Config) { c.Limits = Limits{PerClient: 32} })
	// Cache the file first: the one copy every transfer shares.
	if _, err := get(t, f.addr, "images/img/3/vmlinuz", 65464); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 16; i++ {
		c := newRawClient(t, f.addr)
		c.send(rrq("images/img/3/vmlinuz", "netascii", "timeout", "255"))
		c.mustRecv(opOACK)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if grew > 4<<20 {
		t.Errorf("16 netascii transfers of a %d-byte file grew the heap by %d bytes", len(f.kernel), grew)
	}
}

// The converted stream is pin/tftp's netascii, block by block, whatever
// the block size and however blocks are asked for again.
func TestNetasciiSource(t *testing.T) {
	data := []byte("line one\nline\rtwo\r\n\n\r\rend")
	data = append(data, bytes.Repeat([]byte("ab\ncd\r"), 500)...)
	want, _ := io.ReadAll(netascii.ToReader(bytes.NewReader(data)))
	if n := netasciiSize(data); n != len(want) {
		t.Fatalf("netasciiSize %d, want %d", n, len(want))
	}
	for _, bs := range []int{8, 9, 512, 65464} {
		src := newNetascii(data, bs)
		last := src.size()/bs + 1
		var got []byte
		dst := make([]byte, bs)
		for i := 1; i <= last; i++ {
			src.mark(i)
			n := src.block(dst, i)
			// Ask again for this block and the next, as a resend does.
			if i+1 <= last {
				src.block(dst, i+1)
				if n2 := src.block(dst, i); n2 != n {
					t.Fatalf("blksize %d: block %d is %d bytes, then %d", bs, i, n, n2)
				}
			}
			got = append(got, dst[:n]...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("blksize %d: converted stream differs (%d bytes, want %d)", bs, len(got), len(want))
		}
	}
}

// A boot file replaced at the same path (a generation removed and made
// again under the same number, an initrd rebuilt with --force) is served
// new, not from the cache: before, the old vmlinuz was served for good.
func TestReplacedBootFileServedNew(t *testing.T) {
	f := start(t)
	name := "images/img/3/initrd.img"
	if got, err := get(t, f.addr, name, 512); err != nil || string(got) != "initrd" {
		t.Fatalf("first fetch: %q, %v", got, err)
	}
	path := filepath.Join(f.state, "images/img/3/boot/initrd.img")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("fixture layout changed: %v", err)
	}
	st, _ := os.Stat(path)
	// Same size, same mtime, another inode: what rm and a rebuild give.
	tmp := path + ".new"
	os.WriteFile(tmp, []byte("INITRD"), 0o644)
	os.Chtimes(tmp, st.ModTime(), st.ModTime())
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if got, err := get(t, f.addr, name, 512); err != nil || string(got) != "INITRD" {
		t.Errorf("after the file was replaced: %q, %v; want the new bytes", got, err)
	}
	// Rewritten in place with another size.
	os.WriteFile(path, []byte("initrd, third"), 0o644)
	if got, err := get(t, f.addr, name, 512); err != nil || string(got) != "initrd, third" {
		t.Errorf("after the file was rewritten: %q, %v; want the new bytes", got, err)
	}
}

// The first requests of a boot storm all miss the cache at once: the file
// is read once, into one buffer of its size, and shared (before, each
// request read its own copy, and 4 fetches of a 24 MiB initrd took RSS to
// 213 MB).
func TestStormReadsOneCopy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "initrd.img")
	os.WriteFile(path, bytes.Repeat([]byte("initrd"), 16<<20/6), 0o644)
	fc := newFileCache(1 << 30)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got := make(chan []byte, 16)
	for i := 0; i < 16; i++ {
		go func() {
			b, err := fc.get(path)
			if err != nil {
				t.Error(err)
			}
			got <- b
		}()
	}
	var first []byte
	for i := 0; i < 16; i++ {
		b := <-got
		if first == nil {
			first = b
		} else if len(b) != len(first) || &b[0] != &first[0] {
			t.Fatalf("request %d got its own copy", i)
		}
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 24<<20 {
		t.Errorf("16 concurrent misses of a 16 MiB file allocated %d MiB", alloc>>20)
	}
}

// countingHandler counts log records at WARN and above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countingHandler) WithGroup(string) slog.Handler                { return h }

// Bad requests from strangers do not become one warning each (before, every
// traversal attempt and every abandoned transfer logged a WARN).
func TestBadRequestsWarnRarely(t *testing.T) {
	var warns atomic.Int64
	f := start(t, func(c *Config) { c.Logger = slog.New(countingHandler{&warns}) })
	shorten(t, 100*time.Millisecond, 30*time.Second)
	for i := 0; i < 5; i++ {
		c := newRawClientFrom(t, f.addr, net.IPv4(127, 0, 1, byte(i+1)))
		for j := 0; j < 10; j++ {
			c.send(rrq("../../etc/shadow", "octet"))
			c.send(append([]byte{0, opWRQ}, []byte("x\x00octet\x00")...))
		}
		c.send(rrq("images/img/3/vmlinuz", "octet")) // never acknowledged
	}
	time.Sleep(time.Second)
	if n := warns.Load(); n > 3 {
		t.Errorf("%d warnings for 100 bad requests and 5 abandoned transfers, want at most one per kind", n)
	}
}

package syslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	localhost = netip.MustParseAddr("127.0.0.1")
	loopback  = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}
)

// harness is a Server on loopback listeners, stopped at the end of the test.
type harness struct {
	s        *Server
	tcp, udp string
	cancel   context.CancelFunc
	done     chan error
	stopped  bool
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, cfg, ln)
}

func startOn(t *testing.T, cfg Config, ln net.Listener) *harness {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	h := &harness{s: New(cfg), tcp: ln.Addr().String(), udp: pc.LocalAddr().String(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.s.serve(ctx, ln, pc) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.stopped {
		return
	}
	h.stopped = true
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("serve did not return after its context ended")
	}
}

// dial connects to the server's TCP port from src, a loopback address.
func (h *harness) dial(t *testing.T, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", h.tcp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) sendUDP(t *testing.T, src, msg string) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(h.udp)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func read(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// closedByServer says whether the server closes c within two seconds.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// stillOpen says whether c stays open (unread, unclosed) for 200 ms.
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func TestReceivesTCPAndUDP(t *testing.T) {
	h := start(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	c := h.dial(t, "127.0.0.1")
	fmt.Fprint(c, "<13>Nov 25 10:00:00 node01 systemd[1]: Started ssh.\n")
	msg := "<13>1 2026-11-25T10:00:01Z node01 app - - - octet counted"
	fmt.Fprintf(c, "%d %s", len(msg), msg)
	c.Close()
	h.sendUDP(t, "127.0.0.1", "<13>Nov 25 10:00:02 node01 kernel: over udp\n")
	// From an address outside the allow list: refused.
	c2 := h.dial(t, "127.0.0.2")
	fmt.Fprint(c2, "<13>Nov 25 10:00:03 intruder x: y\n")
	c2.Close()
	want := "<13>Nov 25 10:00:00 node01 systemd[1]: Started ssh.\n" + msg + "\n<13>Nov 25 10:00:02 node01 kernel: over udp\n"
	file := h.s.LogFile(localhost)
	waitFor(t, "three messages", func() bool { return len(read(file)) >= len(want) })
	// TCP and UDP race each other, so compare as sets of lines.
	if got := read(file); len(got) != len(want) || !sameLines(got, want) {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
	waitFor(t, "the refusal to be counted", func() bool { return h.s.Stats().Refused == 1 })
	if _, err := os.Stat(h.s.LogFile(netip.MustParseAddr("127.0.0.2"))); err == nil {
		t.Error("a refused host's messages were kept")
	}
}

func sameLines(a, b string) bool {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// A node that sends an endless line must cost the master a bounded buffer
// and a bounded log line, and its next line must still arrive.
func TestLongLineIsTruncatedNotBuffered(t *testing.T) {
	const maxLine = 8 << 10
	h := start(t, Config{Allow: loopback, Limits: Limits{MaxLine: maxLine}})
	c := h.dial(t, "127.0.0.1")
	file := h.s.LogFile(localhost)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	fmt.Fprint(c, "<13>start ")
	for i := 0; i < 1024; i++ { // 64 MiB, no newline
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprint(c, "\n<13>after the long line\n")
	waitFor(t, "the line after the long one", func() bool { return strings.Contains(read(file), "after the long line") })
	runtime.ReadMemStats(&after)

	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("receiving a 64 MiB line allocated %d MiB", alloc>>20)
	}
	got := read(file)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2 || len(lines[0]) != maxLine || !strings.HasPrefix(lines[0], "<13>start AAAA") || lines[1] != "<13>after the long line" {
		t.Errorf("log is %d bytes, %d lines (first %d bytes); want the long line cut at %d bytes, then the next", len(got), len(lines), len(lines[0]), maxLine)
	}
	if st := h.s.Stats(); st.Truncated != 1 || st.Messages != 2 {
		t.Errorf("stats %+v, want 2 messages, 1 truncated", st)
	}
}

func TestOctetCountedFraming(t *testing.T) {
	const maxLine = 64
	h := start(t, Config{Allow: loopback, Limits: Limits{MaxLine: maxLine}})
	c := h.dial(t, "127.0.0.1")
	file := h.s.LogFile(localhost)
	fmt.Fprint(c, "10 0123456789")
	fmt.Fprint(c, "200 "+strings.Repeat("B", 200)) // over the line limit: cut, the rest skipped
	fmt.Fprint(c, "5 after")
	fmt.Fprint(c, "2026-11-25 legacy line without PRI\n") // digits but no count
	fmt.Fprint(c, strings.Repeat("1", 1<<20)+"\n")        // digits and no space: not a count
	fmt.Fprint(c, "<13>after2\n")
	want := "0123456789\n" + strings.Repeat("B", maxLine) + "\nafter\n2026-11-25 legacy line without PRI\n" +
		strings.Repeat("1", maxLine) + "\n<13>after2\n"
	waitFor(t, "the last message", func() bool { return strings.Contains(read(file), "after2") })
	if got := read(file); got != want {
		t.Errorf("log:\n%.300q\nwant:\n%q", got, want)
	}
	if st := h.s.Stats(); st.Truncated != 2 {
		t.Errorf("truncated %d, want 2", st.Truncated)
	}
	// A count beyond any message bootd keeps is a framing error.
	fmt.Fprint(c, "9999999 x")
	if !closedByServer(c) {
		t.Error("a connection announcing a 10 MB frame stayed open")
	}
}

func TestControlCharactersEscaped(t *testing.T) {
	h := start(t, Config{Allow: loopback})
	file := h.s.LogFile(localhost)
	h.sendUDP(t, "127.0.0.1", "<13>x: a\n<13>Nov 25 10:00:00 node01 sshd: forged\x1b[2J\ttab\x7f\r\n")
	waitFor(t, "the UDP message", func() bool { return h.s.Stats().Messages == 1 })
	msg := "<13>y: b\r\n<13>forged too\x00"
	c := h.dial(t, "127.0.0.1")
	fmt.Fprintf(c, "%d %s", len(msg), msg)
	waitFor(t, "the TCP message", func() bool { return h.s.Stats().Messages == 2 })
	want := "<13>x: a#012<13>Nov 25 10:00:00 node01 sshd: forged#033[2J#011tab#177\n" +
		"<13>y: b#015#012<13>forged too\n"
	if got := read(file); got != want {
		t.Errorf("log:\n%q\nwant:\n%q", got, want)
	}
}

// countHandler counts the records logged at WARN or above.
type countHandler struct{ warns *atomic.Int64 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

func TestAllowList(t *testing.T) {
	t.Run("empty allows no one", func(t *testing.T) {
		h := start(t, Config{})
		h.sendUDP(t, "127.0.0.1", "<13>x: udp\n")
		c := h.dial(t, "127.0.0.1")
		fmt.Fprint(c, "<13>x: tcp\n")
		waitFor(t, "two refusals", func() bool { return h.s.Stats().Refused == 2 })
		if _, err := os.Stat(h.s.LogFile(localhost)); err == nil {
			t.Error("with no allow list, messages were kept")
		}
	})
	t.Run("refusals are counted, not logged each", func(t *testing.T) {
		var warns atomic.Int64
		h := start(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Logger: slog.New(countHandler{&warns})})
		for i := 0; i < 20; i++ {
			c := h.dial(t, "127.0.0.2")
			fmt.Fprint(c, "<13>intruder: tcp\n")
			c.Close()
			h.sendUDP(t, "127.0.0.2", "<13>intruder: udp\n")
		}
		waitFor(t, "40 refusals", func() bool { return h.s.Stats().Refused == 40 })
		if n := warns.Load(); n > 1 {
			t.Errorf("%d warnings for 40 refused messages and connections, want at most 1", n)
		}
		if _, err := os.Stat(h.s.LogFile(netip.MustParseAddr("127.0.0.2"))); err == nil {
			t.Error("a refused host's messages were kept")
		}
	})
}

// openLogFiles counts this process's descriptors open on files in dir.
func openLogFiles(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

func TestOpenFilesBounded(t *testing.T) {
	dir := t.TempDir()
	h := start(t, Config{Dir: dir, Allow: loopback, Limits: Limits{OpenFiles: 3}})
	var srcs []string
	for i := 10; i < 22; i++ {
		srcs = append(srcs, fmt.Sprintf("127.0.0.%d", i))
	}
	for _, src := range srcs {
		h.sendUDP(t, src, "<13>hello from "+src+"\n")
	}
	waitFor(t, "12 messages", func() bool { return h.s.Stats().Messages == 12 })
	if n, st := openLogFiles(t, dir), h.s.Stats(); n > 3 || st.OpenFiles > 3 {
		t.Errorf("%d log files open (stats say %d) after 12 sources, want at most 3", n, st.OpenFiles)
	}
	// The least recently used was closed; writing to it again reopens it.
	h.sendUDP(t, srcs[0], "<13>again\n")
	waitFor(t, "13 messages", func() bool { return h.s.Stats().Messages == 13 })
	for i, src := range srcs {
		want := "<13>hello from " + src + "\n"
		if i == 0 {
			want += "<13>again\n"
		}
		if got := read(filepath.Join(dir, src+".log")); got != want {
			t.Errorf("%s.log = %q, want %q", src, got, want)
		}
	}
	if n := openLogFiles(t, dir); n > 3 {
		t.Errorf("%d log files open, want at most 3", n)
	}
}

func TestLogFileRotated(t *testing.T) {
	const max = 4096
	h := start(t, Config{Allow: loopback, Limits: Limits{MaxFileSize: max}})
	file := h.s.LogFile(localhost)
	c := h.dial(t, "127.0.0.1")
	for i := 0; i < 100; i++ { // 10,000 bytes
		fmt.Fprintf(c, "<13>msg %03d %s\n", i, strings.Repeat("x", 87))
	}
	waitFor(t, "the last message", func() bool { return h.s.Stats().Messages == 100 })
	cur, old := read(file), read(file+".1")
	if len(cur) > max || len(old) > max || len(old) == 0 {
		t.Fatalf("%s is %d bytes and .1 %d bytes; want both at most %d, .1 not empty", file, len(cur), len(old), max)
	}
	if _, err := os.Stat(file + ".2"); err == nil {
		t.Error("more than one old file kept")
	}
	// What is kept is the latest messages, without a gap at the rotation.
	var first, last, prev int
	fmt.Sscanf(cur, "<13>msg %d", &first)
	fmt.Sscanf(cur[strings.LastIndex(cur[:len(cur)-1], "\n")+1:], "<13>msg %d", &last)
	fmt.Sscanf(old[strings.LastIndex(old[:len(old)-1], "\n")+1:], "<13>msg %d", &prev)
	if last != 99 || prev != first-1 {
		t.Errorf(".1 ends with message %d, the log runs from %d to %d; want consecutive, ending at 99", prev, first, last)
	}
}

func TestConnectionLimits(t *testing.T) {
	h := start(t, Config{Allow: loopback, Limits: Limits{Conns: 3, ConnsPerSource: 2}})
	conns := func(n int) func() bool { return func() bool { return h.s.Stats().Conns == n } }
	a1, a2 := h.dial(t, "127.0.0.1"), h.dial(t, "127.0.0.1")
	waitFor(t, "two connections", conns(2))
	if a3 := h.dial(t, "127.0.0.1"); !closedByServer(a3) {
		t.Error("a third connection from one source was kept")
	}
	b1 := h.dial(t, "127.0.0.2")
	waitFor(t, "three connections", conns(3))
	if c1 := h.dial(t, "127.0.0.3"); !closedByServer(c1) {
		t.Error("a fourth connection in all was kept")
	}
	a1.Close()
	waitFor(t, "a closed connection to be forgotten", conns(2))
	c2 := h.dial(t, "127.0.0.3")
	if !stillOpen(c2) {
		t.Error("a connection under the limits was closed")
	}
	if st := h.s.Stats(); st.OverLimit != 2 {
		t.Errorf("%d connections over the limits, want 2", st.OverLimit)
	}
	// Shutting down closes the connections still open.
	h.stop(t)
	for _, c := range []net.Conn{a2, b1, c2} {
		if !closedByServer(c) {
			t.Error("a connection outlived the server")
		}
	}
}

func TestIdleConnectionClosed(t *testing.T) {
	const idle = 500 * time.Millisecond
	h := start(t, Config{Allow: loopback, Limits: Limits{IdleTimeout: idle}})
	t0 := time.Now()
	quiet, chatty := h.dial(t, "127.0.0.1"), h.dial(t, "127.0.0.1")
	closedAfter := make(chan time.Duration, 1)
	go func() {
		if closedByServer(quiet) {
			closedAfter <- time.Since(t0)
		}
		close(closedAfter)
	}()
	for i := 0; i < 8; i++ { // two timeouts' worth, talking every quarter
		fmt.Fprintf(chatty, "<13>still here %d\n", i)
		time.Sleep(idle / 4)
	}
	fmt.Fprint(chatty, "<13>still here\n")
	if !stillOpen(chatty) {
		t.Error("a connection that kept talking was closed")
	}
	d, ok := <-closedAfter
	switch {
	case !ok:
		t.Error("an idle connection was still open after 2 s")
	case d < idle:
		t.Errorf("an idle connection was closed after %v, before the %v timeout", d, idle)
	}
}

// flakyListener fails its Accepts as a listener does when the process or
// the system is out of descriptors, while failing is set.
type flakyListener struct {
	net.Listener
	failing atomic.Bool
	calls   atomic.Int64
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	if l.failing.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestAcceptErrorsBackOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.failing.Store(true)
	h := startOn(t, Config{Allow: loopback}, fl)
	time.Sleep(400 * time.Millisecond)
	select {
	case err := <-h.done:
		h.done <- err
		t.Fatalf("the receiver stopped on EMFILE: %v", err)
	default:
	}
	// 5, 10, 20, 40, 80, 160 ms: about 7 tries in 400 ms.
	if n := fl.calls.Load(); n > 12 {
		t.Errorf("%d accepts in 400 ms of EMFILE: not backing off", n)
	}
	fl.failing.Store(false)
	c := h.dial(t, "127.0.0.1")
	fmt.Fprint(c, "<13>after EMFILE\n")
	waitFor(t, "a message after the accept errors", func() bool { return h.s.Stats().Messages == 1 })
}

// FuzzFraming feeds arbitrary streams to the TCP framing and the escaping
// that follows it: no message may exceed the limit, no written line may hold
// a control character, and plain newline-framed input must come out as its
// lines.
func FuzzFraming(f *testing.F) {
	for _, seed := range []string{
		"<13>Nov 25 10:00:00 node01 systemd[1]: Started ssh.\n",
		"10 0123456789",
		"200 " + strings.Repeat("B", 200) + "5 after",
		"2026-11-25 legacy line without PRI\n",
		"9999999 x",
		"11111111111111111111111111111111111111111\n<13>x\n",
		"<13>x: a\n<13>forged\x1b[2J\t\x7f\r\n\x00",
		"3 ab",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 32
		fr := newFrameReader(bytes.NewReader(data), max)
		var msgs []string
		total := 0
		for {
			if len(msgs) > len(data)+1 {
				t.Fatalf("%d messages from %d bytes", len(msgs), len(data))
			}
			msg, cut, err := fr.next()
			if len(msg) > max || (cut && len(msg) != max) {
				t.Fatalf("message of %d bytes (cut %v), limit %d", len(msg), cut, max)
			}
			total += len(msg)
			var want []byte
			for _, b := range msg {
				if b < 0x20 || b == 0x7f {
					want = fmt.Appendf(want, "#%03o", b)
				} else {
					want = append(want, b)
				}
			}
			if got := escape(nil, msg); !bytes.Equal(got, want) {
				t.Fatalf("escape(%q) = %q, want %q", msg, got, want)
			}
			msgs = append(msgs, string(msg))
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && err != errFrameTooLong {
					t.Fatalf("error %v from a bytes.Reader", err)
				}
				break
			}
		}
		if total > len(data) {
			t.Fatalf("%d bytes of messages from %d bytes", total, len(data))
		}
		lines := strings.Split(string(data), "\n")
		for _, l := range lines {
			if len(l) > max || (l != "" && l[0] >= '1' && l[0] <= '9') {
				return // cut or octet-counted: the checks above are what holds
			}
		}
		if len(msgs) != len(lines) || !slices.Equal(msgs, lines) {
			t.Fatalf("lines %q came out as %q", lines, msgs)
		}
	})
}

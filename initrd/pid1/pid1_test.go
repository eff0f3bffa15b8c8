package pid1

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/boot"
)

// The kernel's NFS client takes these text options through mount(2): the
// contract with bootd's export (one port for MOUNT and NFS, no rpcbind,
// no locking) lives here.
func TestNFSOptions(t *testing.T) {
	o := NFSOptions(boot.Params{NFS: netip.MustParseAddrPort("10.0.0.1:20490")})
	for _, want := range []string{"vers=3", "proto=tcp", "port=20490", "mountport=20490", "mountproto=tcp", "mountaddr=10.0.0.1", "addr=10.0.0.1", "nolock", "hard"} {
		if !strings.Contains(","+o+",", ","+want+",") {
			t.Errorf("options %q lack %s", o, want)
		}
	}
	if strings.Contains(o, "soft") {
		t.Errorf("a root filesystem must be a hard mount: %q", o)
	}
}

func TestMaskBits(t *testing.T) {
	for bits := 8; bits <= 30; bits += 11 {
		m := make([]byte, 4)
		for i := 0; i < bits; i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		if got := maskBits(m); got != bits {
			t.Errorf("maskBits(/%d) = %d", bits, got)
		}
	}
}

// A step blocked in a system call (a hard NFS mount with no server) never
// returns to retry: the watchdog fires past the deadline and names it.
func TestWatchdogNamesTheBlockedStep(t *testing.T) {
	p := &initProc{out: io.Discard}
	fired := make(chan string, 1)
	stop := p.watchdog(50*time.Millisecond, func(step string) { fired <- step })
	defer stop()
	block := make(chan struct{})
	go p.retry("mounting /img/1 read-only", func() error { <-block; return nil })
	select {
	case step := <-fired:
		if step != "mounting /img/1 read-only" {
			t.Errorf("watchdog named %q", step)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not fire for a blocked step")
	}
	close(block)
	// Stopped in time, it never fires.
	stop2 := p.watchdog(100*time.Millisecond, func(string) { t.Error("a stopped watchdog fired") })
	if !stop2() {
		t.Error("could not stop the watchdog")
	}
	time.Sleep(200 * time.Millisecond)
}

func TestHostsWith(t *testing.T) {
	base := "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n"
	if got, ok := hostsWith(base, "node01"); ok || got != base+"127.0.1.1\tnode01\n" {
		t.Errorf("added: %q %v", got, ok)
	}
	for _, h := range []string{base + "10.0.0.5 node01\n", base + "10.0.0.5 node01.cluster node01\n", "10.0.0.5 node01.cluster"} {
		if got, ok := hostsWith(h, "node01"); !ok || got != h {
			t.Errorf("%q: %q %v", h, got, ok)
		}
	}
	for _, h := range []string{base + "# node01 was here\n", base + "node01 1.2.3.4\n", "127.0.0.1 localhost"} {
		if _, ok := hostsWith(h, "node01"); ok {
			t.Errorf("%q: said node01 has a line", h)
		}
	}
	if got, _ := hostsWith("127.0.0.1 localhost", "n"); got != "127.0.0.1 localhost\n127.0.1.1\tn\n" {
		t.Errorf("no final newline: %q", got)
	}
}

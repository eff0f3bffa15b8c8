package syslog

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestReceivesTCPAndUDP(t *testing.T) {
	dir := t.TempDir()
	s := New(dir, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, nil)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.ListenAndServe(ctx, addr) }()
	var c net.Conn
	var err error
	for i := 0; i < 50; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "<13>Nov 25 10:00:00 node01 systemd[1]: Started ssh.\n")
	msg := "<13>1 2026-11-25T10:00:01Z node01 app - - - octet counted"
	fmt.Fprintf(c, "%d %s", len(msg), msg)
	c.Close()
	u, _ := net.Dial("udp", addr)
	fmt.Fprint(u, "<13>Nov 25 10:00:02 node01 kernel: over udp")
	u.Close()
	// From an address outside the allow list: refused.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	if c2, err := d.Dial("tcp", addr); err == nil {
		fmt.Fprint(c2, "<13>Nov 25 10:00:03 intruder x: y\n")
		c2.Close()
	}
	want := []string{"Started ssh.", "octet counted", "over udp"}
	var got string
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile(s.LogFile(netip.MustParseAddr("127.0.0.1")))
		got = string(b)
		if strings.Contains(got, want[0]) && strings.Contains(got, want[1]) && strings.Contains(got, want[2]) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("log lacks %q:\n%s", w, got)
		}
	}
	if _, err := os.Stat(s.LogFile(netip.MustParseAddr("127.0.0.2"))); err == nil {
		t.Error("a refused host's messages were kept")
	}
	cancel()
	<-done
}

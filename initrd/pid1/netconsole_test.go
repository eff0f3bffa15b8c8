package pid1

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestDatagrams(t *testing.T) {
	log := "<6>[    0.000000] Linux version 6.1.0\n<4>[    1.5] e1000: link up\n<12>[    2.0] x\n" + strings.Repeat("y", 2500) + "\n<6>[    3.0] last"
	grams := datagrams([]byte(log), 1000, 1<<20)
	all := string(bytes.Join(grams, nil))
	if want := "[    0.000000] Linux version 6.1.0\n[    1.5] e1000: link up\n[    2.0] x\n" + strings.Repeat("y", 2500) + "\n[    3.0] last\n"; all != want {
		t.Errorf("sent %q", all)
	}
	for i, g := range grams {
		if len(g) > 1000 {
			t.Errorf("datagram %d is %d bytes", i, len(g))
		}
		// Whole lines, but for a line longer than a datagram.
		if !bytes.HasSuffix(g, []byte("\n")) && !bytes.Equal(g, bytes.Repeat([]byte("y"), 1000)) {
			t.Errorf("datagram %d ends mid-line: %q", i, g)
		}
	}
	if len(grams) != 4 {
		t.Errorf("%d datagrams, want 4 (the first 3 lines; 2500 bytes cut in 3, the rest sharing with the last line)", len(grams))
	}
	// Short lines (57 bytes) share datagrams.
	var many strings.Builder
	for i := 0; i < 100; i++ {
		many.WriteString("<6>[    1.000000] a line of fifty bytes or so, give or take\n")
	}
	if g := datagrams([]byte(many.String()), 1000, 1<<20); len(g) != 6 {
		t.Errorf("100 lines of 57 bytes in %d datagrams, want 6", len(g))
	}
	// Over the budget, the newest are sent and the rest counted.
	g := datagrams([]byte(many.String()), 1000, 600)
	all = string(bytes.Join(g, nil))
	if !strings.HasPrefix(all, "bootd-init: 5130 bytes of older kernel messages not sent\n") || strings.Count(all, "a line") != 10 {
		t.Errorf("over budget: %q", all)
	}
	if len(datagrams(nil, 1000, 1000)) != 0 {
		t.Error("datagrams from nothing")
	}
}

func TestARPLookup(t *testing.T) {
	table := []byte(`IP address       HW type     Flags       HW address            Mask     Device
10.0.0.254       0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.1         0x1         0x2         52:54:00:12:34:56     *        eth1
10.0.0.1         0x1         0x2         52:54:00:aa:bb:cc     *        eth0
10.0.0.10        0x1         0x6         52:54:00:00:00:10     *        eth0
`)
	for ip, want := range map[string]string{"10.0.0.1": "52:54:00:aa:bb:cc", "10.0.0.254": "", "10.0.0.10": "52:54:00:00:00:10", "10.0.0.2": ""} {
		if got := arpLookup(table, netip.MustParseAddr(ip), "eth0").String(); got != want {
			t.Errorf("%s on eth0: %q, want %q", ip, got, want)
		}
	}
}

func TestNetconsoleArg(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:AA:BB:CC")
	src, dst := netip.MustParseAddr("10.0.0.105"), netip.MustParseAddrPort("10.0.0.1:6666")
	if got := netconsoleArg(src, "eth0", dst, mac); got != "@10.0.0.105/eth0,6666@10.0.0.1/52:54:00:aa:bb:cc" {
		t.Errorf("with a MAC: %s", got)
	}
	// No MAC: netconsole broadcasts.
	if got := netconsoleArg(src, "eth0", dst, nil); got != "@10.0.0.105/eth0,6666@10.0.0.1/" {
		t.Errorf("without a MAC: %s", got)
	}
}

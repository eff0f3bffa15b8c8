package pid1

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/initrd"
)

const (
	// maxDatagram is netconsole's own chunk size: what the kernel sends
	// later and what the init sends first look alike to the receiver.
	maxDatagram = 1000
	// earlyBudget bounds the kernel messages sent at once. A receiver
	// may cap what it keeps from one node a second, and a big machine's
	// log buffer holds megabytes: the latest messages matter most.
	earlyBudget = 192 << 10
	// neighbourWait bounds the wait for the next hop's MAC.
	neighbourWait = time.Second
)

// captureConsole sends the kernel's messages to bootd.console: those
// printed so far as UDP datagrams from the node's address, then, through
// the netconsole module, every one after, before and after switch_root.
// The boot waits on it for about a second at most and never fails over
// it: what goes wrong is said on the console.
func (p *initProc) captureConsole(ifname string, node net.IP, modDir string, mods *initrd.Modules) {
	src, ok := netip.AddrFromSlice(node.To4())
	dst := netip.AddrPortFrom(p.params.Console.Addr().Unmap(), p.params.Console.Port())
	if !ok || !dst.Addr().Is4() {
		p.say("bootd.console=%s: the init's network is IPv4 only; the kernel console is not sent", p.params.Console)
		return
	}
	conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		p.say("sending the kernel console to %s: %v; it is not sent", dst, err)
		return
	}
	defer conn.Close()
	hop := nextHop(dst.Addr())
	log, err := kernelLog()
	if err != nil {
		p.say("reading the kernel messages so far: %v", err)
	}
	var mac net.HardwareAddr
	grams := datagrams(log, maxDatagram, earlyBudget)
	for i, d := range grams {
		if _, err := conn.Write(d); err != nil {
			p.say("sending the kernel messages so far to %s: %v", dst, err)
			break
		}
		if i == 0 {
			// netconsole sends without ARP: the first datagram has the
			// kernel resolve the MAC it needs.
			mac = waitNeighbour(hop, ifname, neighbourWait)
		}
		if i%32 == 31 {
			// A burst bigger than a receiver's socket buffer is dropped.
			time.Sleep(2 * time.Millisecond)
		}
	}
	if mac == nil {
		p.say("netconsole: no MAC for %s in the neighbour table after %v: the kernel console is broadcast", hop, neighbourWait)
	}
	if _, ok := mods.Path("netconsole"); !ok {
		p.say("this initrd has no netconsole module (the image's kernel has none, or has it built in): kernel messages after this point are not sent to %s", dst)
		return
	}
	arg := netconsoleArg(src, ifname, dst, mac)
	if err := loadModules(modDir, mods, []string{"netconsole"}, map[string]string{"netconsole": "netconsole=" + arg}); err != nil {
		p.say("netconsole: %v: kernel messages after this point are not sent to %s", err, dst)
		return
	}
	p.say("kernel console sent to %s (%d datagrams so far; netconsole=%s)", dst, len(grams), arg)
}

// netconsoleArg is the netconsole module's parameter: from the node's
// address on the boot NIC to the receiver, through the next hop's MAC
// (none: broadcast).
func netconsoleArg(src netip.Addr, ifname string, dst netip.AddrPort, mac net.HardwareAddr) string {
	return fmt.Sprintf("@%s/%s,%d@%s/%s", src, ifname, dst.Port(), dst.Addr(), mac)
}

// nextHop is the address whose MAC frames to dst carry: dst itself on the
// link, else the gateway the kernel routes it through.
func nextHop(dst netip.Addr) netip.Addr {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err == nil && len(routes) > 0 && routes[0].Gw != nil {
		if gw, ok := netip.AddrFromSlice(routes[0].Gw.To4()); ok {
			return gw
		}
	}
	return dst
}

// waitNeighbour polls the neighbour table for ip's MAC on ifname.
func waitNeighbour(ip netip.Addr, ifname string, wait time.Duration) net.HardwareAddr {
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile("/proc/net/arp")
		if mac := arpLookup(b, ip, ifname); mac != nil || time.Now().After(deadline) {
			return mac
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// arpLookup finds a complete entry for ip on ifname in /proc/net/arp:
//
//	IP address       HW type     Flags       HW address            Mask     Device
//	10.0.0.1         0x1         0x2         52:54:00:12:34:56     *        eth0
func arpLookup(table []byte, ip netip.Addr, ifname string) net.HardwareAddr {
	const atfCom = 0x2 // resolved; an entry still resolving has 00:00:00:00:00:00
	for _, l := range strings.Split(string(table), "\n") {
		f := strings.Fields(l)
		if len(f) != 6 || f[0] != ip.String() || f[5] != ifname {
			continue
		}
		flags, err := strconv.ParseUint(f[2], 0, 32)
		if err != nil || flags&atfCom == 0 {
			continue
		}
		if mac, err := net.ParseMAC(f[3]); err == nil && len(mac) == 6 {
			return mac
		}
	}
	return nil
}

// kernelLog reads what the kernel printed so far.
func kernelLog() ([]byte, error) {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	n, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, b)
	if err != nil {
		return nil, err
	}
	return b[:n], nil
}

// datagrams packs a syslog(2) read of the kernel log into datagrams of
// whole lines, as netconsole sends them (no "<level>" prefix), each at
// most max bytes (a longer line is cut). Past budget bytes, the oldest
// lines are left out and a first line says how much.
func datagrams(log []byte, max, budget int) [][]byte {
	var lines [][]byte
	for _, l := range bytes.SplitAfter(log, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		if l[0] == '<' {
			if i := bytes.IndexByte(l[:min(len(l), 5)], '>'); i > 1 {
				if _, err := strconv.Atoi(string(l[1:i])); err == nil {
					l = l[i+1:]
				}
			}
		}
		if l[len(l)-1] != '\n' {
			l = append(l[:len(l):len(l)], '\n')
		}
		lines = append(lines, l)
	}
	total, skipped := 0, 0
	first := len(lines)
	for first > 0 && total+len(lines[first-1]) <= budget {
		first--
		total += len(lines[first])
	}
	for _, l := range lines[:first] {
		skipped += len(l)
	}
	if skipped > 0 {
		note := fmt.Appendf(nil, "bootd-init: %d bytes of older kernel messages not sent\n", skipped)
		lines = append([][]byte{note}, lines[first:]...)
	}
	var out [][]byte
	var cur []byte
	for _, l := range lines {
		for len(l) > max {
			if len(cur) > 0 {
				out, cur = append(out, cur), nil
			}
			out, l = append(out, l[:max:max]), l[max:]
		}
		if len(cur)+len(l) > max {
			out, cur = append(out, cur), nil
		}
		cur = append(cur, l...)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

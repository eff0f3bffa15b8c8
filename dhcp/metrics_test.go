package dhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
)

// loopbackConns opens the sockets a server answers on, on loopback ports
// (67 and 4011 need root), and a client socket.
func loopbackConns(t *testing.T) (dhcpConn, pxeConn, cl net.PacketConn) {
	t.Helper()
	var c [3]net.PacketConn
	for i := range c {
		var err error
		if c[i], err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c[i].Close() })
	}
	return c[0], c[1], c[2]
}

// serveWith runs serve on fresh loopback sockets until the test ends, and
// returns a function that sends a packet to port 67's socket (pxe false)
// or 4011's, and the client socket.
func serveWith(t *testing.T, serve func(ctx context.Context, dhcpConn, pxeConn net.PacketConn) error) (func(b []byte, pxe bool), net.PacketConn) {
	t.Helper()
	dhcpConn, pxeConn, cl := loopbackConns(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); serve(ctx, dhcpConn, pxeConn) }()
	t.Cleanup(func() { cancel(); <-done })
	send := func(b []byte, pxe bool) {
		t.Helper()
		to := dhcpConn.LocalAddr()
		if pxe {
			to = pxeConn.LocalAddr()
		}
		if _, err := cl.WriteTo(b, to); err != nil {
			t.Fatal(err)
		}
	}
	return send, cl
}

// recvReply reads the reply the client socket gets.
func recvReply(t *testing.T, cl net.PacketConn) *dhcpv4.DHCPv4 {
	t.Helper()
	buf := make([]byte, 1500)
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := cl.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	resp, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// waitMetrics waits until reg's metrics named in want read as want says.
func waitMetrics(t *testing.T, reg *prometheus.Registry, want string, names ...string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err == nil {
			return
		}
	}
	t.Fatal(err)
}

// Replies and ignored requests are counted as the sockets see them, by
// mode, in both servers; a reply is counted once it is sent.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	loopback := net.IPv4(127, 0, 0, 1)
	pxeBIOS := req{mac: known, class: "PXEClient:Arch:00000:UNDI:002001", arch: arch(iana.INTEL_X86PC)}
	pxeUEFI := req{mac: known, mt: dhcpv4.MessageTypeRequest, class: "PXEClient:Arch:00007:UNDI:003000", arch: arch(iana.EFI_X86_64)}
	with := func(r req, f func(*req)) []byte { f(&r); return r.packet(t).ToBytes() }

	// Proxy mode, with 127.0.0.1 as a relay so that port 67's answers go
	// to an address a loopback socket can send to.
	table, err := nodes.NewTable([]nodes.Node{{MAC: known.String(), Hostname: "n1", IP: "10.213.0.11"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ServerIP: server, Planner: boot.NewPlanner(boot.Options{Nodes: table}), Events: events.New(16),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Relays: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Metrics: m}
	p := NewProxy(cfg)
	send, cl := serveWith(t, p.serve)
	send(with(pxeBIOS, func(r *req) { r.mt, r.giaddr = dhcpv4.MessageTypeDiscover, loopback }), false)
	send(with(pxeBIOS, func(r *req) { r.mt, r.class = dhcpv4.MessageTypeDiscover, "android-dhcp-13" }), false)
	send(with(pxeBIOS, func(r *req) { r.mt, r.arch = dhcpv4.MessageTypeDiscover, arch(iana.EFI_ARM64) }), false)
	send(with(pxeBIOS, func(r *req) { r.mt, r.mac = dhcpv4.MessageTypeDiscover, unknown }), false)
	send(with(pxeBIOS, func(r *req) { r.mt = dhcpv4.MessageTypeRequest }), false)
	send(with(pxeBIOS, func(r *req) { r.mt, r.giaddr = dhcpv4.MessageTypeDiscover, net.IPv4(192, 0, 2, 7) }), false)
	send([]byte("not DHCP"), false)
	send(pxeUEFI.packet(t).ToBytes(), true)
	if ack := recvReply(t, cl); ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "syslinux.efi" {
		t.Fatalf("port 4011 answer: %s", ack.Summary())
	}

	// Full mode.
	now := time.Now()
	f, err := NewFull(FullConfig{Config: cfg, Network: testNetwork(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	send, cl = serveWith(t, f.serve)
	send(with(pxeBIOS, func(r *req) { r.mt, r.giaddr = dhcpv4.MessageTypeDiscover, loopback }), false)
	requestFor := func(ip net.IP, sid netip.Addr) []byte {
		r := pxeBIOS
		r.mt, r.giaddr = dhcpv4.MessageTypeRequest, loopback
		pkt := r.packet(t)
		pkt.UpdateOption(dhcpv4.OptRequestedIPAddress(ip))
		pkt.UpdateOption(dhcpv4.OptServerIdentifier(sid.AsSlice()))
		return pkt.ToBytes()
	}
	send(requestFor(net.IPv4(10, 213, 0, 11), server), false)                            // ACK
	send(requestFor(net.IPv4(10, 213, 0, 50), server), false)                            // NAK: not its address
	send(requestFor(net.IPv4(10, 213, 0, 11), netip.MustParseAddr("10.213.0.9")), false) // another server's
	send(with(pxeBIOS, func(r *req) { r.mt, r.giaddr = dhcpv4.MessageTypeDiscover, net.IPv4(192, 0, 2, 7) }), false)
	send([]byte{1, 1, 6, 0}, false)
	send(pxeUEFI.packet(t).ToBytes(), true)
	if ack := recvReply(t, cl); ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "syslinux.efi" {
		t.Fatalf("port 4011 answer in full mode: %s", ack.Summary())
	}

	waitMetrics(t, reg, `
# HELP bootd_dhcp_ignored_total DHCP requests left unanswered, by server mode and reason.
# TYPE bootd_dhcp_ignored_total counter
bootd_dhcp_ignored_total{mode="full",reason="malformed"} 1
bootd_dhcp_ignored_total{mode="full",reason="no_address"} 0
bootd_dhcp_ignored_total{mode="full",reason="not_ours"} 1
bootd_dhcp_ignored_total{mode="full",reason="not_pxe"} 0
bootd_dhcp_ignored_total{mode="full",reason="other"} 0
bootd_dhcp_ignored_total{mode="full",reason="relay_refused"} 1
bootd_dhcp_ignored_total{mode="full",reason="unknown_node"} 0
bootd_dhcp_ignored_total{mode="full",reason="unsupported_arch"} 0
bootd_dhcp_ignored_total{mode="proxy",reason="malformed"} 1
bootd_dhcp_ignored_total{mode="proxy",reason="no_address"} 0
bootd_dhcp_ignored_total{mode="proxy",reason="not_ours"} 1
bootd_dhcp_ignored_total{mode="proxy",reason="not_pxe"} 1
bootd_dhcp_ignored_total{mode="proxy",reason="other"} 0
bootd_dhcp_ignored_total{mode="proxy",reason="relay_refused"} 1
bootd_dhcp_ignored_total{mode="proxy",reason="unknown_node"} 1
bootd_dhcp_ignored_total{mode="proxy",reason="unsupported_arch"} 1
# HELP bootd_dhcp_leases Leases the full DHCP server holds, offered ones included, as its lease table reports them.
# TYPE bootd_dhcp_leases gauge
bootd_dhcp_leases 1
# HELP bootd_dhcp_replies_total DHCP replies sent, by server mode and reply type.
# TYPE bootd_dhcp_replies_total counter
bootd_dhcp_replies_total{mode="full",reply="ack"} 2
bootd_dhcp_replies_total{mode="full",reply="nak"} 1
bootd_dhcp_replies_total{mode="full",reply="offer"} 1
bootd_dhcp_replies_total{mode="proxy",reply="ack"} 1
bootd_dhcp_replies_total{mode="proxy",reply="nak"} 0
bootd_dhcp_replies_total{mode="proxy",reply="offer"} 1
`)
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

// Servers without metrics (a nil *Metrics) count nothing and do not
// panic; NewMetrics(nil) makes collectors without registering them.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.replied(modeFull, dhcpv4.MessageTypeAck)
	m.ignore(modeProxy, reasonOther)
	m.setLeases(3)
	if m := NewMetrics(nil); testutil.ToFloat64(m.leases) != 0 {
		t.Error("a new gauge is not zero")
	}
}

package dhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/bootd/bootd/events"
)

// TestPXEPortAnswersFromTheVIP: a UEFI client sends its port-4011 request
// to the server identifier, which with address: set is a VIP beside the
// interface's own address. The answer must come from the VIP: the client
// listens for the server it asked, and an answer from the interface's
// first address (the kernel's choice) is one it may drop.
func TestPXEPortAnswersFromTheVIP(t *testing.T) {
	srvNS, cliNS := netnsPair(t, "52:54:00:bd:00:01")
	for _, args := range [][]string{
		{"ip", "-n", srvNS, "addr", "add", "10.214.0.10/24", "dev", "d0"},
		{"ip", "-n", cliNS, "addr", "add", "10.214.0.150/24", "dev", "d1"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	vip := netip.MustParseAddr("10.214.0.10")
	p := NewProxy(Config{Interface: "d0", ServerIP: vip, Planner: planner(t), Events: events.New(16),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	served := serveIn(t, srvNS, func(c67, c4011 net.PacketConn) error { return serveConns(ctx, p.log, p.Reply, c67, c4011) })
	req, err := dhcpv4.New(append(pxeMods(iana.EFI_X86_64), dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0, 0xbd, 0, 1}),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(net.IPv4(10, 214, 0, 150)))...)
	if err != nil {
		t.Fatal(err)
	}
	var (
		from *net.UDPAddr
		ack  *dhcpv4.DHCPv4
	)
	inNetns(t, cliNS, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 214, 0, 150), Port: PortClient})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for try := 0; try < 5 && ack == nil; try++ { // the first may go before the server reads
			c.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: vip.AsSlice(), Port: PortPXE})
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, a, err := c.ReadFromUDP(buf)
			if err != nil {
				continue
			}
			from = a
			ack, _ = dhcpv4.FromBytes(buf[:n])
		}
	})
	if ack == nil {
		t.Fatal("no answer on port 4011")
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.ServerIdentifier().String() != vip.String() {
		t.Errorf("answer %s", ack.Summary())
	}
	if from.IP.String() != vip.String() || from.Port != PortPXE {
		t.Errorf("answered from %s, want %s:%d (the address asked)", from, vip, PortPXE)
	}
	cancel()
	<-served
}

package dhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// TestRouterAdvertisement: a router solicitation on the wire is answered
// with an advertisement that offers nothing.
func TestRouterAdvertisement(t *testing.T) {
	srvNS, cliNS := netnsPair(t, "52:54:00:bd:00:09")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	inNetns(t, srvNS, func() {
		ra, err := ListenRouterSolicitations("d0", slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Error(err)
			served <- err
			return
		}
		go func() { served <- ra.Serve(ctx) }()
	})
	var got *icmp.Message
	var err error
	inNetns(t, cliNS, func() {
		var c *icmp.PacketConn
		if c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); err != nil {
			return
		}
		defer c.Close()
		pc := c.IPv6PacketConn()
		ifi, _ := net.InterfaceByName("d1")
		pc.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::1")})
		pc.SetMulticastHopLimit(255)
		pc.SetMulticastInterface(ifi)
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeRouterAdvertisement)
		pc.SetICMPFilter(&f)
		rs, _ := (&icmp.Message{Type: ipv6.ICMPTypeRouterSolicitation, Body: &icmp.RawBody{Data: make([]byte, 4)}}).Marshal(nil)
		buf := make([]byte, 1500)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			// The link-local address may still be tentative: ask again.
			pc.WriteTo(rs, &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: "d1"})
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, _, rerr := c.ReadFrom(buf)
			if rerr != nil {
				continue
			}
			got, err = icmp.ParseMessage(58, buf[:n])
			return
		}
		err = context.DeadlineExceeded
	})
	if err != nil {
		t.Fatalf("no router advertisement: %v", err)
	}
	body := got.Body.(*icmp.RawBody).Data
	if got.Type != ipv6.ICMPTypeRouterAdvertisement || len(body) < 12 || body[1] != 0 || body[2] != 0 || body[3] != 0 {
		t.Errorf("advertisement %+v body %x: want no flags and lifetime 0", got, body)
	}
	cancel()
	<-served
}

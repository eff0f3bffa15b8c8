package tftp

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// TestRepliesFromTheAddressAsked: a server on a wildcard address answers a
// request from the address the request was sent to, not the one the
// kernel would pick for the client. A node that asked a master's VIP
// (address:, held by keepalived) must get its blocks from the VIP: PXE
// ROMs drop TFTP packets from any other address. 127.0.0.2 is the VIP
// here, 127.0.0.1 the address the kernel would choose.
func TestRepliesFromTheAddressAsked(t *testing.T) {
	f := start(t)
	conn, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.srv.Serve(ctx, conn) }()
	defer func() { cancel(); <-done }()
	port := conn.LocalAddr().(*net.UDPAddr).Port

	for _, asked := range []string{"127.0.0.2", "127.0.0.1"} {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rrq := append([]byte{0, opRRQ}, "pxelinux.0\x00octet\x00"...)
		if _, err := c.WriteToUDP(rrq, &net.UDPAddr{IP: net.ParseIP(asked), Port: port}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1024)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("asked %s: no answer: %v", asked, err)
		}
		if n < 4 || binary.BigEndian.Uint16(buf) != opDATA || string(buf[4:n]) != string(f.loader) {
			t.Fatalf("asked %s: got %q, want the loader's one DATA block", asked, buf[:n])
		}
		if from.IP.String() != asked {
			t.Errorf("asked %s, answered from %s", asked, from)
		}
		// The ACK goes to the transfer's own port and ends it.
		c.WriteToUDP([]byte{0, opACK, 0, 1}, from)
	}
}

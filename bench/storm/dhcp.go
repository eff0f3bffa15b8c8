package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"
)

// The DHCP part of a node's boot, as PXE firmware does it beside the
// site's DHCP server: a DISCOVER broadcast on port 67, the boot server's
// proxy OFFER, and, when that offer names no file (UEFI), a REQUEST to the
// boot server's port 4011 from the node's address. The site's own server
// is not simulated: each node has its address already (it is the site's
// server that would have given it), and only the boot server is measured.

// PXE's retransmission timeouts (PXE 2.1, 2.2.1): four tries of the
// DISCOVER at 4, 8, 16 and 32 s, then the firmware gives up: "No boot
// device". The same for the REQUEST on 4011.
var dhcpTimeouts = []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}

// dhcpPort is where broadcast replies come to (68), one socket for all
// the nodes, handing each reply to the node whose transaction it is.
type dhcpPort struct {
	conn    net.PacketConn
	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
			return
		}
		// A thousand offers arrive at once.
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	})
	if err != nil {
		return err
	}
	return serr
}

func listenDHCP(ctx context.Context, iface string) (*dhcpPort, error) {
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		if err := reuseAddr(network, address, rc); err != nil {
			return err
		}
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), iface) })
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", ":68")
	if err != nil {
		return nil, fmt.Errorf("listening on port 68: %w", err)
	}
	p := &dhcpPort{conn: conn, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	go p.read()
	return p, nil
}

func (p *dhcpPort) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		p.deliver(m)
	}
}

func (p *dhcpPort) deliver(m *dhcpv4.DHCPv4) {
	p.mu.Lock()
	ch := p.waiting[m.TransactionID]
	p.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default:
		}
	}
}

func (p *dhcpPort) wait(xid dhcpv4.TransactionID) (chan *dhcpv4.DHCPv4, func()) {
	ch := make(chan *dhcpv4.DHCPv4, 8)
	p.mu.Lock()
	p.waiting[xid] = ch
	p.mu.Unlock()
	return ch, func() {
		p.mu.Lock()
		delete(p.waiting, xid)
		p.mu.Unlock()
	}
}

// firmware is what a simulated node's ROM says it is.
type firmware struct {
	arch  iana.Arch
	class string // option 60
	ipxe  bool   // option 77 "iPXE": the ROM is iPXE (QEMU's, chain-loaded)
}

var (
	fwBIOS = firmware{arch: iana.INTEL_X86PC, class: "PXEClient:Arch:00000:UNDI:002001"}
	fwUEFI = firmware{arch: iana.EFI_X86_64, class: "PXEClient:Arch:00007:UNDI:003016"}
	fwIPXE = firmware{arch: iana.INTEL_X86PC, class: "PXEClient:Arch:00000:UNDI:002001", ipxe: true}
)

// dhcpResult is what the boot server told a node.
type dhcpResult struct {
	server   netip.Addr // siaddr / next-server
	file     string
	retrans  int
	via4011  bool
	attempts int
}

var errNoOffer = errors.New("no boot server answered (PXE gave up after 4 tries)")

// pxeDHCP runs a node's DHCP: the DISCOVER, and the 4011 REQUEST when the
// offer has no file.
func pxeDHCP(ctx context.Context, p *dhcpPort, n *node, server netip.Addr, fw firmware) (dhcpResult, error) {
	var res dhcpResult
	mods := []dhcpv4.Modifier{
		dhcpv4.WithTransactionID(n.xid),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fw.class)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(fw.arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, n.uuid[:]...)),
	}
	if fw.ipxe {
		mods = append(mods, dhcpv4.WithUserClass("iPXE", false))
	}
	disc, err := dhcpv4.NewDiscovery(n.mac, mods...)
	if err != nil {
		return res, err
	}
	ch, done := p.wait(n.xid)
	defer done()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	var offer *dhcpv4.DHCPv4
	for i, to := range dhcpTimeouts {
		if i > 0 {
			res.retrans++
		}
		res.attempts++
		if _, err := p.conn.WriteTo(disc.ToBytes(), bcast); err != nil {
			return res, fmt.Errorf("sending DISCOVER: %w", err)
		}
		offer = awaitOffer(ctx, ch, server, to)
		if offer != nil || ctx.Err() != nil {
			break
		}
	}
	if offer == nil {
		return res, errNoOffer
	}
	res.server = server
	if ip, ok := netip.AddrFromSlice(offer.ServerIPAddr.To4()); ok && ip.IsValid() && !ip.IsUnspecified() {
		res.server = ip
	}
	res.file = offer.BootFileName
	if res.file != "" {
		return res, nil
	}
	// No file (UEFI, or a boot menu): ask the boot server on 4011, from
	// the node's own address, for the first boot item its offer named.
	res.via4011 = true
	item := bootItem(offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation))
	lc := net.ListenConfig{Control: reuseAddr}
	conn, err := lc.ListenPacket(ctx, "udp4", netip.AddrPortFrom(n.ip, 68).String())
	if err != nil {
		return res, fmt.Errorf("port 68 on %s: %w", n.ip, err)
	}
	defer conn.Close()
	xid := n.xid
	xid[1] ^= 0xff // the REQUEST's own transaction
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(n.mac), dhcpv4.WithTransactionID(xid),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(n.ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fw.class)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(fw.arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, n.uuid[:]...)))
	if err != nil {
		return res, err
	}
	if item != 0 {
		// PXE_BOOT_ITEM (71): the server type from the menu, layer 0.
		req.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, byte(item >> 8), byte(item), 0, 0, 255}))
	}
	to4011 := &net.UDPAddr{IP: res.server.AsSlice(), Port: 4011}
	buf := make([]byte, 1500)
	for i, to := range dhcpTimeouts {
		if i > 0 {
			res.retrans++
		}
		res.attempts++
		if _, err := conn.WriteTo(req.ToBytes(), to4011); err != nil {
			return res, fmt.Errorf("sending REQUEST to 4011: %w", err)
		}
		deadline := time.Now().Add(to)
		for {
			conn.SetReadDeadline(deadline)
			k, _, err := conn.ReadFrom(buf)
			if err != nil {
				break
			}
			ack, err := dhcpv4.FromBytes(buf[:k])
			if err != nil || ack.TransactionID != req.TransactionID || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName == "" {
				continue
			}
			res.file = ack.BootFileName
			return res, nil
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	return res, errors.New("the boot server did not answer on port 4011 (PXE gave up after 4 tries)")
}

// awaitOffer waits for the boot server's proxy offer (a PXEClient offer
// from it); the site's offers, if any, are not what a PXE ROM boots from.
func awaitOffer(ctx context.Context, ch chan *dhcpv4.DHCPv4, server netip.Addr, to time.Duration) *dhcpv4.DHCPv4 {
	t := time.NewTimer(to)
	defer t.Stop()
	for {
		select {
		case m := <-ch:
			if m.MessageType() != dhcpv4.MessageTypeOffer || m.ClassIdentifier() != "PXEClient" {
				continue
			}
			if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(server.AsSlice()) {
				continue
			}
			return m
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// bootItem is the first boot server type a proxy offer's PXE options
// (option 43) name: its boot menu (9) or its boot servers (8); 0 if none.
func bootItem(opt []byte) uint16 {
	var servers uint16
	for len(opt) >= 2 && opt[0] != 255 {
		code, l := opt[0], int(opt[1])
		if code == 0 {
			opt = opt[1:]
			continue
		}
		if len(opt) < 2+l {
			break
		}
		v := opt[2 : 2+l]
		switch {
		case code == 9 && l >= 2:
			return uint16(v[0])<<8 | uint16(v[1])
		case code == 8 && l >= 2 && servers == 0:
			servers = uint16(v[0])<<8 | uint16(v[1])
		}
		opt = opt[2+l:]
	}
	return servers
}

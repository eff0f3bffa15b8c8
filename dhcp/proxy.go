// Package dhcp answers PXE firmware on the cluster network. In proxy mode
// it runs beside the site's own DHCP server, which keeps handing out
// addresses: bootd answers only PXE clients, only with boot information,
// and never assigns an address (RFC 4578, PXE 2.1 "ProxyDHCP").
//
// The wire flow, per firmware:
//
//   - BIOS (arch 0), including QEMU's iPXE ROM: the DISCOVER on port 67 gets
//     an OFFER with no address, option 60 "PXEClient", siaddr and option 54
//     set to bootd, the boot file (pxelinux.0) in the BOOTP header and
//     option 67, and option 43 with PXE discovery control 8 ("boot the file
//     in this offer, skip boot server discovery"). BIOS PXE ROMs need the
//     43 to take a proxy offer's file without a further round trip.
//   - UEFI x86-64 (arch 7, and 9 which some x64 firmware sends): the OFFER
//     on port 67 carries no file and no option 43. EDK2-derived firmware
//     (OVMF, most vendors) then classifies it as a "BINL" proxy offer and
//     asks again on port 4011, where bootd answers with an ACK naming
//     syslinux.efi. This is pixiecore's choice, and the one that works
//     with firmware that misbehaves when option 43 and a file arrive
//     together in the first offer.
//   - Port 4011 requests from any supported firmware are answered by
//     unicast to the client, which by then has its address.
//
// Option 97 (client UUID) is echoed when present and not required. A
// request that came through a relay (giaddr set) is answered to the relay
// if it is one of dhcp.relays, and dropped otherwise.
// Anything else, garbage included, is dropped with a debug log line.
package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
)

// Ports of the PXE protocol.
const (
	PortDHCP   = 67
	PortClient = 68
	PortPXE    = 4011
)

// Config configures a proxy server.
type Config struct {
	// Interface is the cluster NIC; both sockets bind to it.
	Interface string
	// ServerIP is bootd's address on Interface, sent as siaddr and option
	// 54. Zero means: the interface's first IPv4 address.
	ServerIP netip.Addr
	Planner  *boot.Planner
	Events   *events.Log
	Logger   *slog.Logger
	// Relays are the DHCP relay agents (giaddr) whose requests are
	// answered; a request naming any other relay is dropped, since its
	// answer would go to whatever address the request named.
	Relays []netip.Addr
	// Metrics, if set, counts replies and ignored requests for Prometheus.
	Metrics *Metrics
}

// relayed says whether req came through a relay, and whether that relay
// is one of cfg's.
func (cfg *Config) relayed(req *dhcpv4.DHCPv4) (via, allowed bool) {
	if req.GatewayIPAddr == nil || req.GatewayIPAddr.IsUnspecified() {
		return false, true
	}
	gi, ok := netip.AddrFromSlice(req.GatewayIPAddr)
	if !ok {
		return true, false
	}
	for _, r := range cfg.Relays {
		if r == gi.Unmap() {
			return true, true
		}
	}
	return true, false
}

// Proxy is the proxy-DHCP server.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	mode mode // for metrics: a Full's Proxy counts as full
}

// NewProxy returns a proxy-DHCP server.
func NewProxy(cfg Config) *Proxy {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Proxy{cfg: cfg, log: log.With("service", "dhcp", "mode", "proxy")}
}

// InterfaceAddr returns the first IPv4 address of an interface.
func InterfaceAddr(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && n.IP.To4() != nil {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %q has no IPv4 address", name)
}

// Serve listens on ports 67 and 4011 of the interface until ctx ends.
func (p *Proxy) Serve(ctx context.Context) error {
	if !p.cfg.ServerIP.IsValid() {
		ip, err := InterfaceAddr(p.cfg.Interface)
		if err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		p.cfg.ServerIP = ip
	}
	conns, err := openConns(p.cfg.Interface)
	if err != nil {
		return err
	}
	p.log.Info("answering PXE clients", "interface", p.cfg.Interface, "server_ip", p.cfg.ServerIP.String())
	return p.serve(ctx, conns[0], conns[1])
}

// serve answers on already-open sockets for ports 67 and 4011.
func (p *Proxy) serve(ctx context.Context, dhcpConn, pxeConn net.PacketConn) error {
	return serveCounted(ctx, p.log, p.Reply, p.cfg.Metrics, p.mode, dhcpConn, pxeConn)
}

// openConns opens ports 67 and 4011 on the interface.
func openConns(iface string) ([]net.PacketConn, error) {
	var conns []net.PacketConn
	for _, port := range []int{PortDHCP, PortPXE} {
		c, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: port})
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("dhcp: listening on %s port %d: %w", iface, port, err)
		}
		growReadBuffer(c, readBuffer)
		conns = append(conns, c)
	}
	return conns, nil
}

// readBuffer is the socket receive buffer asked for on the DHCP ports. A
// boot storm's DISCOVERs arrive in bursts; Linux's default (208 KiB, about
// 600 packets) overflowed at 8000 DISCOVERs/s in bench/dhcp.sh.
const readBuffer = 4 << 20

// growReadBuffer sets a socket's receive buffer, past net.core.rmem_max
// when bootd may (SO_RCVBUFFORCE needs CAP_NET_ADMIN, which a DHCP server
// binding port 67 usually has), else up to that limit.
func growReadBuffer(c *net.UDPConn, size int) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	})
	if serr != nil {
		c.SetReadBuffer(size)
	}
}

type replyFunc func(req *dhcpv4.DHCPv4, port int, peer net.Addr) (*dhcpv4.DHCPv4, net.Addr)

// serveConns answers on already-open sockets for ports 67 and 4011.
func serveConns(ctx context.Context, log *slog.Logger, reply replyFunc, dhcpConn, pxeConn net.PacketConn) error {
	return serveCounted(ctx, log, reply, nil, modeProxy, dhcpConn, pxeConn)
}

// serveCounted is serveConns counting, as mode md, the replies sent and
// the datagrams that are not DHCP at all (which never reach reply).
func serveCounted(ctx context.Context, log *slog.Logger, reply replyFunc, m *Metrics, md mode, dhcpConn, pxeConn net.PacketConn) error {
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for _, c := range []struct {
		conn net.PacketConn
		port int
	}{{dhcpConn, PortDHCP}, {pxeConn, PortPXE}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- loop(ctx, log, reply, m, md, c.conn, c.port)
		}()
	}
	go func() {
		<-ctx.Done()
		dhcpConn.Close()
		pxeConn.Close()
	}()
	wg.Wait()
	close(errc)
	if ctx.Err() != nil {
		return nil
	}
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

func loop(ctx context.Context, log *slog.Logger, reply replyFunc, m *Metrics, md mode, conn net.PacketConn, port int) error {
	// A reply to a request sent to one of this master's addresses goes
	// from that address: a client that asked the VIP of address: on port
	// 4011 (or a relay) would otherwise hear from the interface's own
	// address, which the PXE client does not wait for.
	var pc *ipv4.PacketConn
	if uc, ok := conn.(*net.UDPConn); ok {
		pc = ipv4.NewPacketConn(uc)
		if pc.SetControlMessage(ipv4.FlagDst, true) != nil {
			pc = nil
		}
	}
	buf := make([]byte, 1<<16)
	for {
		var (
			n    int
			peer net.Addr
			dst  net.IP
			err  error
		)
		if pc != nil {
			var cm *ipv4.ControlMessage
			n, cm, peer, err = pc.ReadFrom(buf)
			if cm != nil {
				dst = cm.Dst
			}
		} else {
			n, peer, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp: reading port %d: %w", port, err)
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			log.Debug("dropped undecodable packet", "from", peer.String(), "bytes", n, "err", err)
			m.ignore(md, reasonMalformed)
			continue
		}
		resp, dest := reply(req, port, peer)
		if resp == nil {
			continue
		}
		out := resp.ToBytes()
		sent := false
		if pc != nil && dst != nil && !dst.Equal(net.IPv4bcast) && !dst.IsMulticast() && !dst.IsUnspecified() {
			// A subnet's broadcast address cannot be a source: then the
			// kernel picks one, as without the control message.
			_, err = pc.WriteTo(out, &ipv4.ControlMessage{Src: dst}, dest)
			sent = err == nil
		}
		if !sent {
			_, err = conn.WriteTo(out, dest)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			log.Warn("sending reply", "mac", req.ClientHWAddr.String(), "to", dest.String(), "err", err)
			continue
		}
		m.replied(md, resp.MessageType())
	}
}

// clientOf reads what a request says about the firmware that sent it, or
// why it is not firmware bootd can serve: option 60 must start with
// "PXEClient" (or "HTTPClient", UEFI HTTP Boot) and option 93 must name
// BIOS or x86-64 UEFI.
func clientOf(req *dhcpv4.DHCPv4) (boot.Client, string) {
	class := req.ClassIdentifier()
	c := boot.Client{MAC: req.ClientHWAddr, HTTPBoot: strings.HasPrefix(class, "HTTPClient"),
		// iPXE sends "iPXE" bare, not in RFC 3004's length-prefixed form.
		IPXE: bytes.Contains(req.GetOneOption(dhcpv4.OptionUserClassInformation), []byte("iPXE"))}
	if !c.HTTPBoot && !strings.HasPrefix(class, "PXEClient") {
		return c, "not a PXE client"
	}
	archs := req.ClientArch()
	if len(archs) == 0 {
		return c, "PXE client without option 93"
	}
	c.Firmware = boot.FirmwareFor(boot.Arch(archs[0]))
	if c.Firmware == boot.FirmwareUnsupported {
		return c, fmt.Sprintf("unsupported client architecture %d", uint16(archs[0]))
	}
	return c, ""
}

// Reply builds the answer to a request that arrived on port (67 or 4011)
// from peer, and where to send it; nil when bootd stays silent.
func (p *Proxy) Reply(req *dhcpv4.DHCPv4, port int, peer net.Addr) (*dhcpv4.DHCPv4, net.Addr) {
	mac := req.ClientHWAddr
	log := p.log.With("mac", mac.String(), "port", port)
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(mac) != 6 {
		p.cfg.Metrics.ignore(p.mode, reasonMalformed)
		return nil, nil
	}
	if _, ok := p.cfg.relayed(req); !ok {
		log.Debug("ignored: relayed by an address not in dhcp.relays", "giaddr", req.GatewayIPAddr.String())
		p.cfg.Metrics.ignore(p.mode, reasonRelayRefused)
		return nil, nil
	}
	c, why := clientOf(req)
	fw := c.Firmware
	if fw == boot.FirmwareUnsupported {
		log.Debug("ignored: "+why, "class", req.ClassIdentifier())
		p.cfg.Metrics.ignore(p.mode, firmwareReason(req))
		return nil, nil
	}
	mt := req.MessageType()
	var replyType dhcpv4.MessageType
	switch {
	case port == PortDHCP && mt == dhcpv4.MessageTypeDiscover:
		replyType = dhcpv4.MessageTypeOffer
	case port == PortPXE && (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform):
		replyType = dhcpv4.MessageTypeAck
	default:
		// REQUESTs on 67 are for the site's server.
		p.cfg.Metrics.ignore(p.mode, reasonNotOurs)
		return nil, nil
	}
	if !p.cfg.Planner.Serves(mac) {
		log.Debug("ignored: not in the node table (unknown_nodes: ignore)")
		p.cfg.Metrics.ignore(p.mode, reasonUnknownNode)
		return nil, nil
	}
	file := p.cfg.Planner.FirstStage(c)
	if file == "" {
		log.Debug("ignored: UEFI HTTP Boot, and bootd's HTTP boot path is off")
		p.cfg.Metrics.ignore(p.mode, reasonUnsupportedArch)
		return nil, nil
	}
	vendorClass := "PXEClient"
	if c.HTTPBoot {
		// EDK2 takes a URL only from an offer of its own class.
		vendorClass = "HTTPClient"
	}
	server := net.IP(p.cfg.ServerIP.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(replyType),
		dhcpv4.WithServerIP(server),
		dhcpv4.WithYourIP(net.IPv4zero),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendorClass)),
	}
	if uuid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); uuid != nil {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, uuid))
	}
	// UEFI PXE firmware gets its file on port 4011 only (see the package
	// comment); iPXE and HTTP Boot take it from the first offer.
	withFile := fw == boot.FirmwareBIOS || c.IPXE || c.HTTPBoot || port == PortPXE
	if withFile {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptBootFileName(file)))
	}
	if fw == boot.FirmwareBIOS && !c.HTTPBoot {
		// PXE vendor options: discovery control (6) = 8, boot the file named.
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	if port == PortDHCP {
		mods = append(mods, dhcpv4.WithBroadcast(true))
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		log.Warn("building reply", "err", err)
		p.cfg.Metrics.ignore(p.mode, reasonOther)
		return nil, nil
	}
	if withFile {
		resp.BootFileName = file
	}
	var dest net.Addr
	switch {
	case port == PortPXE:
		dest = peer
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		dest = &net.UDPAddr{IP: req.GatewayIPAddr, Port: PortDHCP}
	default:
		dest = &net.UDPAddr{IP: net.IPv4bcast, Port: PortClient}
	}
	ev := events.Event{MAC: mac.String(), Stage: events.StageDHCP, Firmware: fw.String(), Chained: c.IPXE,
		Detail: fmt.Sprintf("proxy dhcp: %s %s via port %d: %s", fw, strings.ToLower(replyType.String()), port, file)}
	if n, ok := p.cfg.Planner.Node(mac); ok {
		ev.Hostname = n.Hostname
	}
	if u, ok := peer.(*net.UDPAddr); ok && port == PortPXE {
		ev.IP = u.IP.String()
	}
	p.cfg.Events.Record(ev)
	log.Info("answered PXE client", "firmware", fw.String(), "reply", replyType.String(), "file", file, "to", dest.String())
	return resp, dest
}

package dhcp

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// ServeRouterAdvertisements answers IPv6 router solicitations on the
// interface with a router advertisement that offers nothing: no prefix, no
// DHCPv6, a router lifetime of zero ("do not route through me").
//
// Why: iPXE (QEMU's PXE ROM and many real ones) configures IPv4 and IPv6
// together and, on a LAN with no IPv6 router, waits about 13 s for an
// advertisement on every boot before it fetches the loader. This answer
// ends that wait at once and changes nothing for any host: it is only for
// cluster networks with no IPv6 router of their own (config dhcp.ipv6_ra).
func ServeRouterAdvertisements(ctx context.Context, iface string, log *slog.Logger) error {
	ra, err := ListenRouterSolicitations(iface, log)
	if err != nil {
		return err
	}
	return ra.Serve(ctx)
}

// RouterAdvertiser is an open ICMPv6 socket on one interface.
type RouterAdvertiser struct {
	c   *icmp.PacketConn
	ifi *net.Interface
	log *slog.Logger
}

// ListenRouterSolicitations opens the socket (in the caller's network
// namespace).
func ListenRouterSolicitations(iface string, log *slog.Logger) (*RouterAdvertiser, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "ra", "interface", iface)
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("ra: %w", err)
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("ra: %w", err)
	}
	pc := c.IPv6PacketConn()
	allRouters := &net.IPAddr{IP: net.ParseIP("ff02::2")}
	fail := func(err error) (*RouterAdvertiser, error) {
		c.Close()
		return nil, fmt.Errorf("ra: %w", err)
	}
	if err := pc.JoinGroup(ifi, allRouters); err != nil {
		return fail(err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := pc.SetICMPFilter(&f); err != nil {
		return fail(err)
	}
	if err := pc.SetControlMessage(ipv6.FlagInterface, true); err != nil {
		return fail(err)
	}
	// RFC 4861: neighbour discovery messages carry hop limit 255.
	pc.SetMulticastHopLimit(255)
	pc.SetHopLimit(255)
	return &RouterAdvertiser{c: c, ifi: ifi, log: log}, nil
}

// Serve answers solicitations until ctx ends.
func (r *RouterAdvertiser) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		r.c.Close()
	}()
	pc, ifi, log := r.c.IPv6PacketConn(), r.ifi, r.log
	ra := routerAdvertisement(ifi.HardwareAddr)
	allNodes := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: ifi.Name}
	log.Info("answering IPv6 router solicitations (no prefix, lifetime 0) so PXE ROMs do not wait for IPv6")
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ra: %w", err)
		}
		if cm == nil || cm.IfIndex != ifi.Index || n < 4 || buf[0] != byte(ipv6.ICMPTypeRouterSolicitation) {
			continue
		}
		if _, err := pc.WriteTo(ra, &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}, allNodes); err != nil {
			log.Warn("sending a router advertisement", "to", src.String(), "err", err)
			continue
		}
		log.Debug("answered router solicitation", "from", src.String())
	}
}

// routerAdvertisement builds an RA with no flags, lifetime 0 and the
// source link-layer address option. The kernel fills in the checksum.
func routerAdvertisement(mac net.HardwareAddr) []byte {
	body := make([]byte, 12)
	body[0] = 64 // current hop limit
	// flags (M, O) 0, router lifetime 0, reachable time 0, retrans timer 0
	binary.BigEndian.PutUint16(body[2:], 0)
	if len(mac) == 6 {
		body = append(body, 1, 1) // source link-layer address, 8 bytes
		body = append(body, mac...)
	}
	m := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Code: 0, Body: &icmp.RawBody{Data: body}}
	b, _ := m.Marshal(nil)
	return b
}

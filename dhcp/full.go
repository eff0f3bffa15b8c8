package dhcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
)

// Network is what a full DHCP server hands out besides addresses.
type Network struct {
	Subnet     netip.Prefix
	Router     netip.Addr
	DNS        []netip.Addr
	Domain     string
	LeaseTime  time.Duration
	RangeStart netip.Addr // zero: only the node table's fixed addresses
	RangeEnd   netip.Addr
}

// FullConfig configures a full DHCP server.
type FullConfig struct {
	Config
	Network Network
	// LeaseFile keeps dynamic leases across restarts; it is replaced
	// atomically on every change.
	LeaseFile string
	// Now is the clock (tests set it).
	Now func() time.Time
}

// Full is a complete DHCP server for labs with no DHCP server of their own:
// nodes in the table get their fixed address, others (with a range set)
// an address from the range. It is PXE-aware: a PXE client's OFFER and ACK
// carry the loader for its firmware, as a site's dhcpd.conf would
// (next-server and filename, no option 60, so no ProxyDHCP round trip).
type Full struct {
	cfg   FullConfig
	log   *slog.Logger
	proxy *Proxy // answers port 4011 follow-ups, should firmware send them

	// The range as numbers; size is 64 bits because 0.0.0.0-255.255.255.255
	// holds 2^32 addresses (0: no range).
	rangeStart, rangeSize uint64
	// network and broadcast are the subnet's own addresses, never leased.
	network, broadcast netip.Addr

	mu sync.Mutex
	// leases and byIP hold the same leases: each address has at most one
	// holder, each MAC at most one lease. So the table never outgrows the
	// range plus the node table, whatever MACs a network makes up.
	leases  map[string]*Lease // by MAC
	byIP    map[netip.Addr]*Lease
	pruneAt time.Time // when expired leases are next dropped
	// async is set while Serve runs: lease changes then mark the file
	// dirty and a flusher writes it, so that a DORA never waits on fsync.
	async bool
	dirty chan struct{}
}

// Lease is one address handed out.
type Lease struct {
	MAC     string     `json:"mac"`
	IP      netip.Addr `json:"ip"`
	Expires time.Time  `json:"expires"`
	offered bool       // offered, not yet requested: not persisted
}

// offerHold is how long an offered address is kept for the machine it was
// offered to. A client answers an OFFER within seconds; holding it for a
// lease time would let a flood of DISCOVERs from made-up MACs take the
// whole range for hours.
const offerHold = time.Minute

// NewFull returns a full DHCP server, loading its lease file.
func NewFull(cfg FullConfig) (*Full, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Network.LeaseTime == 0 {
		cfg.Network.LeaseTime = 12 * time.Hour
	}
	f := &Full{cfg: cfg, log: log.With("service", "dhcp", "mode", "full"), leases: map[string]*Lease{}, byIP: map[netip.Addr]*Lease{}, dirty: make(chan struct{}, 1)}
	if err := f.setRange(); err != nil {
		return nil, err
	}
	f.proxy = NewProxy(cfg.Config)
	f.proxy.mode = modeFull
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// setRange checks the configured range and derives what address() needs.
// The config package checks the same, but a range that slipped through
// would otherwise panic on the first DISCOVER.
func (f *Full) setRange() error {
	nw := f.cfg.Network
	if nw.Subnet.IsValid() && nw.Subnet.Addr().Is4() && nw.Subnet.Bits() <= 30 {
		p := nw.Subnet.Masked()
		f.network = p.Addr()
		f.broadcast = fromU32(u32(p.Addr()) | ^uint32(0)>>p.Bits())
	}
	start, end := nw.RangeStart, nw.RangeEnd
	if !start.IsValid() && !end.IsValid() {
		return nil
	}
	switch {
	case !start.IsValid() || !end.IsValid():
		return fmt.Errorf("dhcp: range %v-%v: want both a first and a last address", start, end)
	case !start.Is4() || !end.Is4():
		return fmt.Errorf("dhcp: range %s-%s: want IPv4 addresses", start, end)
	case end.Less(start):
		return fmt.Errorf("dhcp: range %s-%s: the first address comes after the last", start, end)
	case !nw.Subnet.Contains(start) || !nw.Subnet.Contains(end):
		return fmt.Errorf("dhcp: range %s-%s is not inside subnet %s", start, end, nw.Subnet)
	}
	f.rangeStart = uint64(u32(start))
	f.rangeSize = uint64(u32(end)) - f.rangeStart + 1
	return nil
}

func (f *Full) load() error {
	if f.cfg.LeaseFile == "" {
		return nil
	}
	b, err := os.ReadFile(f.cfg.LeaseFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: reading leases: %w", err)
	}
	var file struct{ Leases []*Lease }
	if err := json.Unmarshal(b, &file); err != nil {
		// A torn or hand-mangled file costs the leases in it, not the
		// whole of bootd: a client renewing an address that is no longer
		// on record gets a NAK and starts over. The file is kept for
		// whoever wants to know what happened.
		aside := fmt.Sprintf("%s.corrupt-%d", f.cfg.LeaseFile, f.cfg.Now().Unix())
		if rerr := os.Rename(f.cfg.LeaseFile, aside); rerr != nil {
			f.log.Error("lease file unreadable and could not be moved aside; starting with no leases, it will be overwritten",
				"file", f.cfg.LeaseFile, "err", err, "rename_err", rerr)
			return nil
		}
		f.log.Warn("lease file unreadable, moved aside; starting with no leases", "file", f.cfg.LeaseFile, "moved_to", aside, "err", err)
		return nil
	}
	now := f.cfg.Now()
	for _, l := range file.Leases {
		// The file is checked like a request: its leases may predate a
		// config change, or come from a version that let two machines
		// hold one address (the later-expiring one keeps it).
		if l == nil || !l.Expires.After(now) {
			continue
		}
		mac, err := net.ParseMAC(l.MAC)
		if err != nil || len(mac) != 6 || !f.allowed(l.IP, mac) {
			continue
		}
		l.MAC = mac.String()
		if old, ok := f.byIP[l.IP]; ok && !l.Expires.After(old.Expires) {
			continue
		}
		if old, ok := f.leases[l.MAC]; ok && !l.Expires.After(old.Expires) {
			continue
		}
		f.setLease(l)
	}
	return nil
}

// setLease records a lease in both indexes, replacing the MAC's old one
// and taking the address from whoever had it before: a lease that was
// left in place would be handed back to its old holder later.
func (f *Full) setLease(l *Lease) {
	f.dropLease(l.MAC)
	if old, ok := f.byIP[l.IP]; ok {
		f.dropLease(old.MAC)
	}
	f.leases[l.MAC] = l
	f.byIP[l.IP] = l
	f.cfg.Metrics.setLeases(len(f.leases))
}

func (f *Full) dropLease(mac string) {
	if old, ok := f.leases[mac]; ok {
		delete(f.leases, mac)
		if f.byIP[old.IP] == old {
			delete(f.byIP, old.IP)
		}
		f.cfg.Metrics.setLeases(len(f.leases))
	}
}

// prune drops expired leases, at most once per offerHold: they hold no
// address, and a table kept to the live ones is what Leases reports
// (called with f.mu held). They stay in the lease file until its next
// write; load skips them.
func (f *Full) prune(now time.Time) {
	if now.Before(f.pruneAt) {
		return
	}
	f.pruneAt = now.Add(offerHold)
	for mac, l := range f.leases {
		if !l.Expires.After(now) {
			f.dropLease(mac)
		}
	}
}

// changed records a lease change: at once when nothing flushes in the
// background, else by the flusher (called with f.mu held).
func (f *Full) changed(log *slog.Logger) {
	if f.async {
		select {
		case f.dirty <- struct{}{}:
		default:
		}
		return
	}
	if err := f.write(f.snapshot()); err != nil {
		log.Error("saving leases", "err", err)
	}
}

// flusher writes the lease file after changes, at most every 100 ms: a
// boot storm's hundreds of ACKs cost a handful of fsyncs.
func (f *Full) flusher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			f.mu.Lock()
			snap := f.snapshot()
			f.mu.Unlock()
			if err := f.write(snap); err != nil {
				f.log.Error("saving leases", "err", err)
			}
			return
		case <-f.dirty:
		}
		// Copy under the lock, marshal and fsync outside it: DORAs go on
		// while the file is written.
		f.mu.Lock()
		snap := f.snapshot()
		f.mu.Unlock()
		if err := f.write(snap); err != nil {
			f.log.Error("saving leases", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// snapshot copies the leases worth persisting (called with f.mu held).
func (f *Full) snapshot() []Lease {
	out := make([]Lease, 0, len(f.leases))
	for _, l := range f.leases {
		if !l.offered {
			out = append(out, *l)
		}
	}
	return out
}

// write stores leases beside the file and renames it over, so a crash
// leaves the old file or the new one, never half of one.
func (f *Full) write(leases []Lease) error {
	if f.cfg.LeaseFile == "" {
		return nil
	}
	var file struct {
		Leases []Lease `json:"leases"`
	}
	file.Leases = leases
	sort.Slice(file.Leases, func(i, j int) bool { return file.Leases[i].IP.Less(file.Leases[j].IP) })
	b, _ := json.MarshalIndent(file, "", "  ")
	if err := os.MkdirAll(filepath.Dir(f.cfg.LeaseFile), 0o755); err != nil {
		return err
	}
	return renameio.WriteFile(f.cfg.LeaseFile, b, 0o644)
}

// Leases returns the current leases, by address.
func (f *Full) Leases() []Lease {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Lease
	for _, l := range f.leases {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// Serve listens on ports 67 and 4011 of the interface until ctx ends.
func (f *Full) Serve(ctx context.Context) error {
	if !f.cfg.ServerIP.IsValid() {
		ip, err := InterfaceAddr(f.cfg.Interface)
		if err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		f.cfg.ServerIP = ip
		f.proxy.cfg.ServerIP = ip
	}
	conns, err := openConns(f.cfg.Interface)
	if err != nil {
		return err
	}
	f.log.Info("serving addresses", "interface", f.cfg.Interface, "server_ip", f.cfg.ServerIP.String(), "subnet", f.cfg.Network.Subnet.String())
	return f.serve(ctx, conns[0], conns[1])
}

func (f *Full) serve(ctx context.Context, dhcpConn, pxeConn net.PacketConn) error {
	f.mu.Lock()
	f.async = true
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.flusher(ctx); close(done) }()
	err := serveCounted(ctx, f.log, f.Reply, f.cfg.Metrics, modeFull, dhcpConn, pxeConn)
	cancel()
	<-done
	return err
}

// address finds the address for a MAC: its fixed one, its lease, or a
// free one from the range. The range is probed from a point derived from
// the MAC, so a machine tends to get the same address again even when its
// lease is gone.
func (f *Full) address(mac net.HardwareAddr) (netip.Addr, bool) {
	if n, ok := f.cfg.Planner.Node(mac); ok && n.Addr().IsValid() {
		return n.Addr(), true
	}
	// The MAC's lease may since have been given away, or the range changed.
	m, now := mac.String(), f.cfg.Now()
	if l, ok := f.leases[m]; ok && f.inRange(l.IP) && !f.heldByOther(l.IP, m, now) {
		return l.IP, true
	}
	// A full server gives range addresses to any machine, PXE or not;
	// unknown_nodes only decides whether bootd boots it.
	if f.rangeSize == 0 {
		return netip.Addr{}, false
	}
	h := fnv.New32a()
	h.Write(mac)
	off := uint64(h.Sum32()) % f.rangeSize
	for i := uint64(0); i < f.rangeSize; i++ {
		a := fromU32(uint32(f.rangeStart + (off+i)%f.rangeSize))
		if f.inRange(a) && !f.heldByOther(a, m, now) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// allowed says whether a may ever be mac's: its fixed address, or for a
// MAC without one, a range address.
func (f *Full) allowed(a netip.Addr, mac net.HardwareAddr) bool {
	if n, ok := f.cfg.Planner.Node(mac); ok && n.Addr().IsValid() {
		return n.Addr() == a
	}
	return f.inRange(a)
}

// fixedAddr says whether a is a node's fixed address: asked of the
// planner each time, since a config reload may change the table.
func (f *Full) fixedAddr(a netip.Addr) bool {
	_, ok := f.cfg.Planner.NodeAt(a)
	return ok
}

// inRange says whether a is a range address bootd may lease: in the range
// and not bootd's, the router's, the subnet's own or a node's fixed one.
func (f *Full) inRange(a netip.Addr) bool {
	if !a.Is4() || uint64(u32(a))-f.rangeStart >= f.rangeSize {
		return false
	}
	return a != f.cfg.ServerIP && a != f.cfg.Network.Router && a != f.network && a != f.broadcast && !f.fixedAddr(a)
}

// heldByOther says whether a MAC other than mac holds a unexpired.
func (f *Full) heldByOther(a netip.Addr, mac string, now time.Time) bool {
	l, taken := f.byIP[a]
	return taken && l.MAC != mac && l.Expires.After(now)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Reply answers one request (nil: stay silent).
func (f *Full) Reply(req *dhcpv4.DHCPv4, port int, peer net.Addr) (*dhcpv4.DHCPv4, net.Addr) {
	if port == PortPXE {
		return f.proxy.Reply(req, port, peer)
	}
	mac := req.ClientHWAddr
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(mac) != 6 {
		f.cfg.Metrics.ignore(modeFull, reasonMalformed)
		return nil, nil
	}
	log := f.log.With("mac", mac.String())
	if _, ok := f.cfg.relayed(req); !ok {
		log.Debug("ignored: relayed by an address not in dhcp.relays", "giaddr", req.GatewayIPAddr.String())
		f.cfg.Metrics.ignore(modeFull, reasonRelayRefused)
		return nil, nil
	}
	server := net.IP(f.cfg.ServerIP.AsSlice())
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.Now()
	f.prune(now)

	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		a, ok := f.address(mac)
		if !ok {
			log.Info("no address to offer")
			f.cfg.Metrics.ignore(modeFull, reasonNoAddress)
			return nil, nil
		}
		// Hold the address until the REQUEST, unless the MAC's lease of it
		// already outlasts the hold.
		hold := now.Add(min(offerHold, f.cfg.Network.LeaseTime))
		if l, ok := f.leases[mac.String()]; !ok || l.IP != a || l.offered || l.Expires.Before(hold) {
			f.setLease(&Lease{MAC: mac.String(), IP: a, Expires: hold, offered: true})
		}
		return f.answer(req, dhcpv4.MessageTypeOffer, a, log)

	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(server) {
			// The client chose another server's offer.
			if l, ok := f.leases[mac.String()]; ok && l.offered {
				f.dropLease(mac.String())
			}
			f.cfg.Metrics.ignore(modeFull, reasonNotOurs)
			return nil, nil
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		wantA, _ := netip.AddrFromSlice(want.To4())
		a, ok := f.address(mac)
		if !ok || wantA != a {
			if !f.cfg.Network.Subnet.Contains(wantA) && req.ServerIdentifier() == nil {
				f.cfg.Metrics.ignore(modeFull, reasonNotOurs)
				return nil, nil // not ours to refuse
			}
			log.Info("refused request", "requested", wantA.String(), "ours", a.String())
			resp, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)), dhcpv4.WithBroadcast(true))
			if err != nil {
				f.cfg.Metrics.ignore(modeFull, reasonOther)
				return nil, nil
			}
			return resp, f.dest(req)
		}
		f.setLease(&Lease{MAC: mac.String(), IP: a, Expires: now.Add(f.cfg.Network.LeaseTime)})
		f.changed(log)
		return f.answer(req, dhcpv4.MessageTypeAck, a, log)

	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		if l, ok := f.leases[mac.String()]; ok {
			f.dropLease(mac.String())
			log.Info("lease ended", "ip", l.IP.String(), "by", req.MessageType().String())
			f.changed(log)
		}
		return nil, nil

	case dhcpv4.MessageTypeInform:
		return f.answer(req, dhcpv4.MessageTypeAck, netip.Addr{}, log)
	}
	f.cfg.Metrics.ignore(modeFull, reasonOther)
	return nil, nil
}

func (f *Full) answer(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, a netip.Addr, log *slog.Logger) (*dhcpv4.DHCPv4, net.Addr) {
	nw := f.cfg.Network
	server := net.IP(f.cfg.ServerIP.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		dhcpv4.WithNetmask(net.CIDRMask(nw.Subnet.Bits(), 32)),
	}
	if a.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(a.AsSlice()), dhcpv4.WithLeaseTime(uint32(nw.LeaseTime/time.Second)))
	}
	if nw.Router.IsValid() {
		mods = append(mods, dhcpv4.WithRouter(nw.Router.AsSlice()))
	}
	if len(nw.DNS) > 0 {
		var ips []net.IP
		for _, d := range nw.DNS {
			ips = append(ips, d.AsSlice())
		}
		mods = append(mods, dhcpv4.WithDNS(ips...))
	}
	if nw.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(nw.Domain)))
	}
	if n, ok := f.cfg.Planner.Node(req.ClientHWAddr); ok && n.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(n.Hostname)))
	}
	c, _ := clientOf(req)
	fw := c.Firmware
	file := ""
	if fw != boot.FirmwareUnsupported && f.cfg.Planner.Serves(req.ClientHWAddr) {
		file = f.cfg.Planner.FirstStage(c)
	}
	if file != "" {
		mods = append(mods, dhcpv4.WithServerIP(server), dhcpv4.WithOption(dhcpv4.OptBootFileName(file)))
		if c.HTTPBoot {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient")))
		}
	}
	if req.ClientIPAddr == nil || req.ClientIPAddr.IsUnspecified() {
		mods = append(mods, dhcpv4.WithBroadcast(true))
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		log.Warn("building reply", "err", err)
		f.cfg.Metrics.ignore(modeFull, reasonOther)
		return nil, nil
	}
	resp.BootFileName = file
	// Only the firmware's DHCP starts a boot; the init's own DHCP (no
	// PXEClient class) comes in the middle of one.
	if mt == dhcpv4.MessageTypeAck && a.IsValid() && file != "" {
		hostname := ""
		if n, ok := f.cfg.Planner.Node(req.ClientHWAddr); ok {
			hostname = n.Hostname
		}
		f.cfg.Events.Record(events.Event{MAC: req.ClientHWAddr.String(), IP: a.String(), Stage: events.StageDHCP,
			Firmware: fw.String(), Hostname: hostname, Chained: c.IPXE, Detail: fmt.Sprintf("full dhcp: lease %s, %s", a, file)})
	}
	// An ACK is worth a line each; a storm's OFFERs only when debugging.
	level := slog.LevelDebug
	if mt == dhcpv4.MessageTypeAck {
		level = slog.LevelInfo
	}
	log.Log(context.Background(), level, "answered", "reply", mt.String(), "ip", a.String(), "file", file)
	return resp, f.dest(req)
}

func (f *Full) dest(req *dhcpv4.DHCPv4) net.Addr {
	switch {
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: PortDHCP}
	case req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: PortClient}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: PortClient}
}

package dhcp

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
)

// testNetwork is the cluster network of the full-mode tests: a range of
// four addresses and one node with a fixed address.
func testNetwork() Network {
	return Network{Subnet: netip.MustParsePrefix("10.213.0.0/24"), Router: netip.MustParseAddr("10.213.0.254"),
		DNS: []netip.Addr{netip.MustParseAddr("10.213.0.1")}, Domain: "cluster", LeaseTime: time.Hour,
		RangeStart: netip.MustParseAddr("10.213.0.100"), RangeEnd: netip.MustParseAddr("10.213.0.103")}
}

func newFull(t *testing.T, leaseFile string, now *time.Time) *Full {
	t.Helper()
	f, err := newFullNet(t, leaseFile, now, testNetwork())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newFullNet(t *testing.T, leaseFile string, now *time.Time, nw Network) (*Full, error) {
	t.Helper()
	table, err := nodes.NewTable([]nodes.Node{{MAC: known.String(), Hostname: "n1", IP: "10.213.0.11"}})
	if err != nil {
		t.Fatal(err)
	}
	return NewFull(FullConfig{
		Config: Config{ServerIP: server, Planner: boot.NewPlanner(boot.Options{Nodes: table}),
			Events: events.New(16), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Network:   nw,
		LeaseFile: leaseFile,
		Now:       func() time.Time { return *now },
	})
}

// dora runs DISCOVER, REQUEST as a client would and returns the ACK.
func dora(t *testing.T, f *Full, mac net.HardwareAddr, pxe bool) (*dhcpv4.DHCPv4, *dhcpv4.DHCPv4) {
	t.Helper()
	r := req{mac: mac, mt: dhcpv4.MessageTypeDiscover}
	if pxe {
		r.class, r.arch = "PXEClient:Arch:00000:UNDI:002001", arch(iana.INTEL_X86PC)
	}
	offer, _ := f.Reply(r.packet(t), PortDHCP, client)
	if offer == nil {
		return nil, nil
	}
	var mods []dhcpv4.Modifier
	if pxe { // PXE ROMs repeat options 60 and 93 in the REQUEST
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(r.class)), dhcpv4.WithOption(dhcpv4.OptClientArch(*r.arch)))
	}
	request, _ := dhcpv4.NewRequestFromOffer(offer, mods...)
	request, _ = dhcpv4.FromBytes(request.ToBytes())
	ack, _ := f.Reply(request, PortDHCP, client)
	return offer, ack
}

func TestFullDORA(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	leases := filepath.Join(t.TempDir(), "dhcp", "leases.json")
	f := newFull(t, leases, &now)

	// A node of the table gets its fixed address, hostname and loader.
	offer, ack := dora(t, f, known, true)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ACK for the known node (offer %v)", offer)
	}
	if ack.YourIPAddr.String() != "10.213.0.11" || ack.HostName() != "n1" || ack.BootFileName != "pxelinux.0" ||
		!ack.ServerIPAddr.Equal(server.AsSlice()) || ack.Router()[0].String() != "10.213.0.254" ||
		ack.SubnetMask().String() != "ffffff00" || ack.IPAddressLeaseTime(0) != time.Hour || ack.DomainName() != "cluster" {
		t.Errorf("ACK: %s", ack.Summary())
	}
	if ack.ClassIdentifier() != "" {
		t.Errorf("full-mode ACK carries option 60 %q: firmware would wait for a proxy", ack.ClassIdentifier())
	}

	// Unknown machines get range addresses; the same MAC gets the same one.
	a1 := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	_, ack1 := dora(t, f, a1, false)
	if ack1 == nil || ack1.BootFileName != "" {
		t.Fatalf("unknown non-PXE machine: %v", ack1)
	}
	ip1 := ack1.YourIPAddr.String()
	if !strings.HasPrefix(ip1, "10.213.0.10") {
		t.Errorf("range address %s", ip1)
	}
	if _, again := dora(t, f, a1, false); again.YourIPAddr.String() != ip1 {
		t.Errorf("second DORA gave %s, first %s", again.YourIPAddr, ip1)
	}
	// The lease survives a restart, read from the file.
	f2 := newFull(t, leases, &now)
	if _, again := dora(t, f2, a1, false); again == nil || again.YourIPAddr.String() != ip1 {
		t.Errorf("after restart: %v, want %s", again, ip1)
	}
	b, _ := os.ReadFile(leases)
	if !strings.Contains(string(b), ip1) || !strings.Contains(string(b), a1.String()) {
		t.Errorf("lease file:\n%s", b)
	}
	// The range holds four addresses: the fifth machine gets none.
	for i := 2; i <= 4; i++ {
		if _, a := dora(t, f2, net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}, false); a == nil {
			t.Fatalf("machine %d got no address", i)
		}
	}
	if o, _ := dora(t, f2, net.HardwareAddr{2, 0, 0, 0, 0, 5}, false); o != nil {
		t.Errorf("offer from a full range: %s", o.YourIPAddr)
	}
	// A lease expires; its address goes to the next machine.
	now = now.Add(2 * time.Hour)
	if _, a := dora(t, f2, net.HardwareAddr{2, 0, 0, 0, 0, 5}, false); a == nil {
		t.Error("no address after the leases expired")
	}
}

func TestFullRefusals(t *testing.T) {
	now := time.Now()
	f := newFull(t, "", &now)
	// A REQUEST for an address that is not the machine's gets a NAK.
	r := req{mac: known, mt: dhcpv4.MessageTypeRequest}.packet(t)
	r.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 213, 0, 50)))
	r.UpdateOption(dhcpv4.OptServerIdentifier(server.AsSlice()))
	if nak, _ := f.Reply(r, PortDHCP, client); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("wrong address: %v, want NAK", nak)
	}
	// A REQUEST naming another server is not ours.
	r.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 213, 0, 2)))
	if resp, _ := f.Reply(r, PortDHCP, client); resp != nil {
		t.Errorf("answered a request for another server: %v", resp.MessageType())
	}
	// RELEASE frees a range lease.
	m := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	dora(t, f, m, false)
	if len(f.Leases()) != 1 {
		t.Fatalf("leases %+v", f.Leases())
	}
	rel := req{mac: m, mt: dhcpv4.MessageTypeRelease}.packet(t)
	f.Reply(rel, PortDHCP, client)
	for _, l := range f.Leases() {
		if l.MAC == m.String() {
			t.Error("lease kept after RELEASE")
		}
	}
}

// checkTable fails when the two lease indexes disagree or an address is
// held for two machines.
func checkTable(t *testing.T, f *Full) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.leases) != len(f.byIP) {
		t.Errorf("%d leases by MAC, %d by address", len(f.leases), len(f.byIP))
	}
	for mac, l := range f.leases {
		if l.MAC != mac || f.byIP[l.IP] != l {
			t.Errorf("lease %+v under %s is not the holder of its address (%+v)", *l, mac, f.byIP[l.IP])
		}
	}
}

// An expired lease given to another machine is no longer its old holder's:
// the old holder coming back must not be handed the address again.
func TestFullNoSharedAddress(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	nw := testNetwork()
	nw.RangeEnd = nw.RangeStart // one address, so B must get A's
	f, err := newFullNet(t, "", &now, nw)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.HardwareAddr{2, 0, 0, 0, 0xa, 1}, net.HardwareAddr{2, 0, 0, 0, 0xb, 1}
	x := nw.RangeStart.String()
	if _, ack := dora(t, f, a, false); ack == nil || ack.YourIPAddr.String() != x {
		t.Fatalf("A: %v, want %s", ack, x)
	}
	now = now.Add(2 * time.Hour) // A's lease expires
	if _, ack := dora(t, f, b, false); ack == nil || ack.YourIPAddr.String() != x {
		t.Fatalf("B after A's lease expired: %v, want %s", ack, x)
	}
	// A comes back while B holds the only address: nothing for A.
	if offer, ack := dora(t, f, a, false); offer != nil || ack != nil {
		t.Errorf("A was offered %v and ACKed %v while B holds %s", offer, ack, x)
	}
	// A asks for it outright (INIT-REBOOT): refused.
	r := req{mac: a, mt: dhcpv4.MessageTypeRequest}.packet(t)
	r.UpdateOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(x)))
	r.UpdateOption(dhcpv4.OptServerIdentifier(server.AsSlice()))
	if resp, _ := f.Reply(r, PortDHCP, client); resp == nil || resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("A's REQUEST for B's address: %v, want NAK", resp)
	}
	if ls := f.Leases(); len(ls) != 1 || ls[0].MAC != b.String() || ls[0].IP.String() != x {
		t.Errorf("leases %+v, want only B's", ls)
	}
	checkTable(t, f)
	// B renews (ciaddr set) and keeps it.
	r = req{mac: b, mt: dhcpv4.MessageTypeRequest}.packet(t)
	r.ClientIPAddr = net.ParseIP(x)
	if resp, _ := f.Reply(r, PortDHCP, client); resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck || resp.YourIPAddr.String() != x {
		t.Errorf("B's renewal: %v", resp)
	}
	// The node keeps its fixed address throughout.
	if _, ack := dora(t, f, known, true); ack == nil || ack.YourIPAddr.String() != "10.213.0.11" {
		t.Errorf("node: %v", ack)
	}
	checkTable(t, f)
}

// A storm of DISCOVERs from made-up MACs must not grow the lease table
// past the addresses there are to hold.
func TestFullLeaseTableBounded(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f := newFull(t, "", &now)
	const rangeSize, fixed = 4, 1
	for i := range 20000 {
		mac := net.HardwareAddr{2, 1, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		f.Reply(req{mac: mac, mt: dhcpv4.MessageTypeDiscover}.packet(t), PortDHCP, client)
		if i%1000 == 0 {
			dora(t, f, known, true)
		}
		now = now.Add(2 * time.Minute) // past an offer's hold, within a lease
	}
	if n := len(f.Leases()); n > rangeSize+fixed {
		t.Errorf("%d leases after a DISCOVER storm, want at most %d", n, rangeSize+fixed)
	}
	checkTable(t, f)

	// Offers nobody requested free their addresses long before a lease
	// time would.
	now = now.Add(2 * time.Hour)
	for i := range rangeSize {
		f.Reply(req{mac: net.HardwareAddr{2, 2, 0, 0, 0, byte(i)}, mt: dhcpv4.MessageTypeDiscover}.packet(t), PortDHCP, client)
	}
	late := net.HardwareAddr{2, 2, 0, 0, 1, 0}
	if o, _ := f.Reply(req{mac: late, mt: dhcpv4.MessageTypeDiscover}.packet(t), PortDHCP, client); o != nil {
		t.Errorf("offer %s from a range held by four offers", o.YourIPAddr)
	}
	now = now.Add(2 * time.Minute)
	if o, _ := f.Reply(req{mac: late, mt: dhcpv4.MessageTypeDiscover}.packet(t), PortDHCP, client); o == nil {
		t.Error("no offer two minutes after the last ones went unanswered")
	}

	// Expired leases are pruned, not just overwritten when reused.
	for i := range rangeSize {
		dora(t, f, net.HardwareAddr{2, 3, 0, 0, 0, byte(i)}, false)
	}
	now = now.Add(2 * time.Hour)
	dora(t, f, known, true)
	for _, l := range f.Leases() {
		if !l.Expires.After(now) {
			t.Errorf("expired lease kept: %+v", l)
		}
	}
	checkTable(t, f)
}

// A range whose size does not fit in 32 bits, and ranges that make no
// sense, must not bring the server down.
func TestFullRangeBounds(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	nw := testNetwork()
	nw.Subnet = netip.MustParsePrefix("0.0.0.0/0")
	nw.RangeStart, nw.RangeEnd = netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255")
	f, err := newFullNet(t, "", &now, nw)
	if err != nil {
		t.Fatal(err)
	}
	m := net.HardwareAddr{2, 0, 0, 0, 0, 7}
	_, ack := dora(t, f, m, false)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("whole-space range: %v", ack)
	}
	if y := ack.YourIPAddr.String(); y == "0.0.0.0" || y == "255.255.255.255" || y == server.String() {
		t.Errorf("handed out %s", y)
	}

	// Of .253-.255 in a /24, .254 is the router and .255 the broadcast
	// address: one machine gets .253, the next nothing.
	nw = testNetwork()
	nw.RangeStart, nw.RangeEnd = netip.MustParseAddr("10.213.0.253"), netip.MustParseAddr("10.213.0.255")
	if f, err = newFullNet(t, "", &now, nw); err != nil {
		t.Fatal(err)
	}
	if _, ack := dora(t, f, net.HardwareAddr{2, 0, 0, 0, 0, 8}, false); ack == nil || ack.YourIPAddr.String() != "10.213.0.253" {
		t.Errorf("first of .253-.255: %v", ack)
	}
	if o, _ := dora(t, f, net.HardwareAddr{2, 0, 0, 0, 0, 9}, false); o != nil {
		t.Errorf("second of .253-.255 offered %s", o.YourIPAddr)
	}

	for name, r := range map[string][2]string{
		"last before first":  {"10.213.0.103", "10.213.0.100"},
		"outside the subnet": {"10.213.0.100", "10.213.1.5"},
		"IPv6":               {"fd00::1", "fd00::9"},
		"first only":         {"10.213.0.100", ""},
	} {
		nw := testNetwork()
		nw.RangeStart, _ = netip.ParseAddr(r[0])
		nw.RangeEnd, _ = netip.ParseAddr(r[1])
		if _, err := newFullNet(t, "", &now, nw); err == nil {
			t.Errorf("%s: range %v accepted", name, r)
		}
	}
}

// A lease file that cannot be read as one is moved aside, not fatal.
func TestFullCorruptLeaseFile(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases.json")
	garbage := []byte(`{"leases": [{"mac": "02:00:00:00:00:01", "ip": "10.213.0.1`)
	if err := os.WriteFile(leases, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFull(t, leases, &now)
	if ls := f.Leases(); len(ls) != 0 {
		t.Errorf("leases from a corrupt file: %+v", ls)
	}
	aside := fmt.Sprintf("%s.corrupt-%d", leases, now.Unix())
	if b, err := os.ReadFile(aside); err != nil || string(b) != string(garbage) {
		t.Errorf("corrupt file not kept as %s: %q %v", aside, b, err)
	}
	if _, ack := dora(t, f, net.HardwareAddr{2, 0, 0, 0, 0, 1}, false); ack == nil {
		t.Error("no lease after starting from a corrupt file")
	}
	if b, err := os.ReadFile(leases); err != nil || !strings.Contains(string(b), "02:00:00:00:00:01") {
		t.Errorf("new lease file: %s %v", b, err)
	}
}

// A parseable lease file may still be hostile: null entries, addresses
// outside the range, and one address held by two machines (as the lease
// table before this test could write).
func TestFullLeaseFileChecked(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	leases := filepath.Join(t.TempDir(), "leases.json")
	soon, later := now.Add(10*time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)
	file := `{"leases": [null,
		{"mac": "02:00:00:00:00:01", "ip": "10.213.0.101", "expires": "` + soon + `"},
		{"mac": "02:00:00:00:00:02", "ip": "10.213.0.101", "expires": "` + later + `"},
		{"mac": "02:00:00:00:00:03", "ip": "10.213.0.50", "expires": "` + later + `"},
		{"mac": "02:00:00:00:00:04", "ip": "10.213.0.11", "expires": "` + later + `"}]}`
	if err := os.WriteFile(leases, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFull(t, leases, &now)
	ls := f.Leases()
	if len(ls) != 1 || ls[0].MAC != "02:00:00:00:00:02" || ls[0].IP.String() != "10.213.0.101" {
		t.Errorf("leases %+v, want only 02:00:00:00:00:02's", ls)
	}
	checkTable(t, f)
	// The loser of the duplicate gets another address.
	if _, ack := dora(t, f, net.HardwareAddr{2, 0, 0, 0, 0, 1}, false); ack == nil || ack.YourIPAddr.String() == "10.213.0.101" {
		t.Errorf("second holder of 10.213.0.101: %v", ack)
	}
}

// Full mode answers relayed requests only from dhcp.relays: the answer
// goes to the giaddr the request names.
func TestFullRelays(t *testing.T) {
	now := time.Now()
	f := newFull(t, "", &now)
	stranger := net.IPv4(192, 0, 2, 7)
	r := req{mac: known, mt: dhcpv4.MessageTypeDiscover, giaddr: stranger}.packet(t)
	if resp, dest := f.Reply(r, PortDHCP, &net.UDPAddr{IP: stranger, Port: 67}); resp != nil {
		t.Errorf("a DISCOVER relayed by an unlisted address was answered, to %v", dest)
	}
	f.cfg.Relays = []netip.Addr{netip.MustParseAddr("192.0.2.7")}
	if resp, dest := f.Reply(r, PortDHCP, &net.UDPAddr{IP: stranger, Port: 67}); resp == nil || dest.String() != "192.0.2.7:67" {
		t.Errorf("a DISCOVER from a listed relay: %v to %v", resp, dest)
	}
}

// TestFullTableUpdate: a node added to the planner's table (a config
// reload) gets its fixed address at once, and range addresses that became
// nodes' fixed ones are no longer leased to strangers.
func TestFullTableUpdate(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f := newFull(t, filepath.Join(t.TempDir(), "leases.json"), &now)
	added := net.HardwareAddr{0x52, 0x54, 0, 0xbd, 0, 0x42}
	if _, ack := dora(t, f, added, true); ack == nil || !strings.HasPrefix(ack.YourIPAddr.String(), "10.213.0.10") {
		t.Fatalf("before the update, a stranger gets a range address: %v", ack)
	}
	list := []nodes.Node{{MAC: known.String(), Hostname: "n1", IP: "10.213.0.11"}, {MAC: added.String(), Hostname: "n42", IP: "10.213.0.42"}}
	for i := range 4 {
		list = append(list, nodes.Node{MAC: fmt.Sprintf("52:54:00:bd:01:%02x", i), IP: fmt.Sprintf("10.213.0.%d", 100+i)})
	}
	table, err := nodes.NewTable(list)
	if err != nil {
		t.Fatal(err)
	}
	o := f.cfg.Planner.Options()
	o.Nodes = table
	f.cfg.Planner.Update(o)
	if _, ack := dora(t, f, added, true); ack == nil || ack.YourIPAddr.String() != "10.213.0.42" || ack.HostName() != "n42" {
		t.Errorf("the added node: %v", ack)
	}
	if _, ack := dora(t, f, net.HardwareAddr{2, 0, 0, 0, 0, 9}, false); ack != nil {
		t.Errorf("a stranger got %s, every range address is a node's now", ack.YourIPAddr)
	}
}

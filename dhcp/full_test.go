package dhcp

import (
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

func newFull(t *testing.T, leaseFile string, now *time.Time) *Full {
	t.Helper()
	table, err := nodes.NewTable([]nodes.Node{{MAC: known.String(), Hostname: "n1", IP: "10.213.0.11"}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFull(FullConfig{
		Config: Config{ServerIP: server, Planner: &boot.Planner{Nodes: table, BootUnknown: false},
			Events: events.New(16), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Network: Network{Subnet: netip.MustParsePrefix("10.213.0.0/24"), Router: netip.MustParseAddr("10.213.0.254"),
			DNS: []netip.Addr{netip.MustParseAddr("10.213.0.1")}, Domain: "cluster", LeaseTime: time.Hour,
			RangeStart: netip.MustParseAddr("10.213.0.100"), RangeEnd: netip.MustParseAddr("10.213.0.103")},
		LeaseFile: leaseFile,
		Now:       func() time.Time { return *now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
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

package dhcp

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
)

var (
	known   = net.HardwareAddr{0x52, 0x54, 0, 0xbd, 0, 1}
	unknown = net.HardwareAddr{0x52, 0x54, 0, 0xbd, 0, 9}
	server  = netip.MustParseAddr("10.213.0.1")
)

func newProxy(t testing.TB, bootUnknown bool) (*Proxy, *events.Log) {
	table, err := nodes.NewTable([]nodes.Node{{MAC: known.String(), Hostname: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := events.New(16)
	return NewProxy(Config{
		ServerIP: server,
		Planner:  boot.NewPlanner(boot.Options{Nodes: table, BootUnknown: bootUnknown}),
		Events:   evs,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Relays:   []netip.Addr{netip.MustParseAddr("10.9.0.1")},
	}), evs
}

type req struct {
	mac    net.HardwareAddr
	mt     dhcpv4.MessageType
	class  string
	arch   *iana.Arch
	uuid   []byte
	giaddr net.IP
	ipxe   bool
}

func (r req) packet(t testing.TB) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(r.mac), dhcpv4.WithMessageType(r.mt)}
	if r.class != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(r.class)))
	}
	if r.arch != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientArch(*r.arch)))
	}
	if r.uuid != nil {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, r.uuid))
	}
	if r.giaddr != nil {
		mods = append(mods, dhcpv4.WithGatewayIP(r.giaddr))
	}
	if r.ipxe {
		mods = append(mods, dhcpv4.WithUserClass("iPXE", false))
	}
	p, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	// What goes over the wire is what the server decodes.
	p, err = dhcpv4.FromBytes(p.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func arch(a iana.Arch) *iana.Arch { return &a }

var client = &net.UDPAddr{IP: net.IPv4(10, 213, 0, 150), Port: 68}

func TestBIOSOffer(t *testing.T) {
	p, evs := newProxy(t, false)
	uuid := append([]byte{0}, bytes.Repeat([]byte{7}, 16)...)
	for _, ipxe := range []bool{false, true} {
		resp, dest := p.Reply(req{mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000:UNDI:002001",
			arch: arch(iana.INTEL_X86PC), uuid: uuid, ipxe: ipxe}.packet(t), PortDHCP, &net.UDPAddr{IP: net.IPv4zero, Port: 68})
		if resp == nil {
			t.Fatalf("no offer for a BIOS PXE client (iPXE %v)", ipxe)
		}
		if resp.MessageType() != dhcpv4.MessageTypeOffer || !resp.YourIPAddr.Equal(net.IPv4zero) {
			t.Errorf("type %v yiaddr %v: want an OFFER of no address", resp.MessageType(), resp.YourIPAddr)
		}
		if !resp.ServerIPAddr.Equal(server.AsSlice()) || !resp.ServerIdentifier().Equal(server.AsSlice()) {
			t.Errorf("siaddr %v option 54 %v, want %v", resp.ServerIPAddr, resp.ServerIdentifier(), server)
		}
		if resp.ClassIdentifier() != "PXEClient" {
			t.Errorf("option 60 %q", resp.ClassIdentifier())
		}
		if resp.BootFileName != "pxelinux.0" || resp.GetOneOption(dhcpv4.OptionBootfileName) == nil ||
			string(resp.GetOneOption(dhcpv4.OptionBootfileName)) != "pxelinux.0" {
			t.Errorf("boot file %q / option 67 %q", resp.BootFileName, resp.GetOneOption(dhcpv4.OptionBootfileName))
		}
		if got := resp.GetOneOption(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, []byte{6, 1, 8, 255}) {
			t.Errorf("option 43 %x, want discovery control 8", got)
		}
		if got := resp.GetOneOption(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(got, uuid) {
			t.Errorf("option 97 %x, want it echoed", got)
		}
		if !resp.IsBroadcast() || dest.String() != "255.255.255.255:68" {
			t.Errorf("sent to %v (broadcast flag %v), want the broadcast address", dest, resp.IsBroadcast())
		}
	}
	if ev := evs.Recent(); len(ev) != 2 || ev[0].MAC != known.String() || ev[0].Stage != events.StageDHCP {
		t.Errorf("events %+v", ev)
	}
}

func TestUEFIOfferThenPXEPort(t *testing.T) {
	p, _ := newProxy(t, false)
	for _, a := range []iana.Arch{iana.EFI_X86_64, iana.EFI_BC} {
		// No option 97: real ROMs omit it.
		offer, _ := p.Reply(req{mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00007:UNDI:003000", arch: arch(a)}.packet(t), PortDHCP, client)
		if offer == nil {
			t.Fatalf("arch %d: no offer", a)
		}
		if offer.BootFileName != "" || offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation) != nil || offer.GetOneOption(dhcpv4.OptionBootfileName) != nil {
			t.Errorf("arch %d: UEFI offer carries file %q / option 43 %x; want neither (BINL: ask on 4011)", a, offer.BootFileName, offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation))
		}
		if offer.GetOneOption(dhcpv4.OptionClientMachineIdentifier) != nil {
			t.Error("option 97 invented")
		}
		ack, dest := p.Reply(req{mac: known, mt: dhcpv4.MessageTypeRequest, class: "PXEClient:Arch:00007:UNDI:003000", arch: arch(a)}.packet(t), PortPXE, client)
		if ack == nil {
			t.Fatalf("arch %d: no answer on 4011", a)
		}
		if ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "syslinux.efi" {
			t.Errorf("arch %d: 4011 answer %v file %q, want ACK syslinux.efi", a, ack.MessageType(), ack.BootFileName)
		}
		if dest.String() != client.String() {
			t.Errorf("4011 answer sent to %v, want the client %v", dest, client)
		}
	}
}

func TestIgnored(t *testing.T) {
	p, evs := newProxy(t, false)
	cases := map[string]req{
		"not PXE":            {mac: known, mt: dhcpv4.MessageTypeDiscover, class: "android-dhcp-13", arch: arch(iana.INTEL_X86PC)},
		"no option 93":       {mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient"},
		"unknown MAC":        {mac: unknown, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient", arch: arch(iana.INTEL_X86PC)},
		"arm64":              {mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient", arch: arch(iana.EFI_ARM64)},
		"REQUEST on port 67": {mac: known, mt: dhcpv4.MessageTypeRequest, class: "PXEClient", arch: arch(iana.INTEL_X86PC)},
		"DISCOVER on 4011":   {mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient", arch: arch(iana.INTEL_X86PC)},
	}
	for name, r := range cases {
		port := PortDHCP
		if name == "DISCOVER on 4011" {
			port = PortPXE
		}
		if resp, _ := p.Reply(r.packet(t), port, client); resp != nil {
			t.Errorf("%s: answered %v", name, resp.MessageType())
		}
	}
	if len(evs.Recent()) != 0 {
		t.Errorf("events for ignored clients: %+v", evs.Recent())
	}
	// unknown_nodes: boot serves the unknown MAC.
	p2, _ := newProxy(t, true)
	if resp, _ := p2.Reply(cases["unknown MAC"].packet(t), PortDHCP, client); resp == nil {
		t.Error("unknown MAC not served with unknown_nodes: boot")
	}
}

func TestRelayed(t *testing.T) {
	p, _ := newProxy(t, false)
	relay := net.IPv4(10, 9, 0, 1)
	resp, dest := p.Reply(req{mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient", arch: arch(iana.INTEL_X86PC), giaddr: relay}.packet(t), PortDHCP, &net.UDPAddr{IP: relay, Port: 67})
	if resp == nil {
		t.Fatal("no answer to a relayed DISCOVER")
	}
	if dest.String() != "10.9.0.1:67" || !resp.GatewayIPAddr.Equal(relay) {
		t.Errorf("relayed answer to %v with giaddr %v, want the relay on port 67", dest, resp.GatewayIPAddr)
	}
	// A request naming a relay that is not in dhcp.relays would make bootd
	// send its answer wherever the request said: it is dropped.
	stranger := net.IPv4(192, 0, 2, 7)
	if resp, dest := p.Reply(req{mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient", arch: arch(iana.INTEL_X86PC), giaddr: stranger}.packet(t), PortDHCP, &net.UDPAddr{IP: stranger, Port: 67}); resp != nil {
		t.Errorf("a DISCOVER relayed by an unlisted address was answered, to %v", dest)
	}
}

// FuzzReply feeds arbitrary datagrams through the decoder and the reply
// logic: bootd answers or stays silent, and never panics.
func FuzzReply(f *testing.F) {
	p, _ := newProxy(f, true)
	f.Add(req{mac: known, mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000", arch: arch(iana.INTEL_X86PC)}.packet(f).ToBytes(), uint16(67))
	f.Add(req{mac: known, mt: dhcpv4.MessageTypeRequest, class: "PXEClient:Arch:00007", arch: arch(iana.EFI_X86_64)}.packet(f).ToBytes(), uint16(4011))
	f.Add([]byte{1, 1, 6, 0}, uint16(67))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		pkt, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		pt := PortDHCP
		if port%2 == 1 {
			pt = PortPXE
		}
		if resp, dest := p.Reply(pkt, pt, client); resp != nil {
			if dest == nil {
				t.Fatal("reply without a destination")
			}
			if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
		}
	})
}

// A boot storm must not overflow the DHCP sockets' receive buffers: bootd
// asks for readBuffer bytes, past net.core.rmem_max when it runs as root.
func TestGrowReadBuffer(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	growReadBuffer(c, readBuffer)
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	want := readBuffer // Linux reports twice what was set, for its bookkeeping
	if os.Getuid() != 0 {
		b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
		if err != nil {
			t.Fatal(err)
		}
		max, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		want = min(want, max)
	}
	if got < want {
		t.Fatalf("SO_RCVBUF = %d, want at least %d", got, want)
	}
}

// TestHTTPBootPath: iPXE gets its script's URL in the first offer, plain
// UEFI PXE firmware is chained to snponly.efi on port 4011, UEFI HTTP Boot
// gets a URL to snponly.efi in an offer of its own class.
func TestHTTPBootPath(t *testing.T) {
	table, _ := nodes.NewTable([]nodes.Node{{MAC: known.String(), Hostname: "n1"}})
	mk := func(mode boot.IPXEMode) *Proxy {
		return NewProxy(Config{ServerIP: server, Events: events.New(16), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Planner: boot.NewPlanner(boot.Options{Nodes: table, IPXE: mode, HTTP: netip.MustParseAddrPort("10.213.0.1:8080")})})
	}
	script := "http://10.213.0.1:8080/boot/52-54-00-bd-00-01.ipxe"
	for _, c := range []struct {
		name  string
		mode  boot.IPXEMode
		r     req
		port  int
		file  string // "" = no file; "-" = no reply
		class string
		opt43 bool
	}{
		{"bios ipxe", boot.IPXEChain, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000:UNDI:002001", arch: arch(iana.INTEL_X86PC), ipxe: true}, PortDHCP, script, "PXEClient", true},
		{"bios ipxe, mode ipxe", boot.IPXEOnly, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000:UNDI:002001", arch: arch(iana.INTEL_X86PC), ipxe: true}, PortDHCP, script, "PXEClient", true},
		{"bios pxe, chain", boot.IPXEChain, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000:UNDI:002001", arch: arch(iana.INTEL_X86PC)}, PortDHCP, "undionly.kpxe", "PXEClient", true},
		{"bios pxe, mode ipxe", boot.IPXEOnly, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000:UNDI:002001", arch: arch(iana.INTEL_X86PC)}, PortDHCP, "pxelinux.0", "PXEClient", true},
		{"uefi pxe offer, chain", boot.IPXEChain, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00007:UNDI:003000", arch: arch(iana.EFI_X86_64)}, PortDHCP, "", "PXEClient", false},
		{"uefi pxe 4011, chain", boot.IPXEChain, req{mt: dhcpv4.MessageTypeRequest, class: "PXEClient:Arch:00007:UNDI:003000", arch: arch(iana.EFI_X86_64)}, PortPXE, "snponly.efi", "PXEClient", false},
		{"uefi ipxe", boot.IPXEChain, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00007:UNDI:003000", arch: arch(iana.EFI_X86_64), ipxe: true}, PortDHCP, script, "PXEClient", false},
		{"uefi http boot", boot.IPXEOnly, req{mt: dhcpv4.MessageTypeDiscover, class: "HTTPClient:Arch:00016:UNDI:003001", arch: arch(iana.Arch(16))}, PortDHCP, "http://10.213.0.1:8080/boot/snponly.efi", "HTTPClient", false},
		{"uefi http boot, path off", boot.IPXEOff, req{mt: dhcpv4.MessageTypeDiscover, class: "HTTPClient:Arch:00016:UNDI:003001", arch: arch(iana.Arch(16))}, PortDHCP, "-", "", false},
		{"bios ipxe, path off", boot.IPXEOff, req{mt: dhcpv4.MessageTypeDiscover, class: "PXEClient:Arch:00000:UNDI:002001", arch: arch(iana.INTEL_X86PC), ipxe: true}, PortDHCP, "pxelinux.0", "PXEClient", true},
	} {
		c.r.mac = known
		resp, _ := mk(c.mode).Reply(c.r.packet(t), c.port, client)
		if c.file == "-" {
			if resp != nil {
				t.Errorf("%s: answered %v", c.name, resp.Summary())
			}
			continue
		}
		if resp == nil {
			t.Errorf("%s: no answer", c.name)
			continue
		}
		if resp.BootFileName != c.file || string(resp.GetOneOption(dhcpv4.OptionBootfileName)) != c.file {
			t.Errorf("%s: file %q, option 67 %q, want %q", c.name, resp.BootFileName, resp.GetOneOption(dhcpv4.OptionBootfileName), c.file)
		}
		if resp.ClassIdentifier() != c.class {
			t.Errorf("%s: option 60 %q, want %q", c.name, resp.ClassIdentifier(), c.class)
		}
		if got := resp.GetOneOption(dhcpv4.OptionVendorSpecificInformation) != nil; got != c.opt43 {
			t.Errorf("%s: option 43 present %v", c.name, got)
		}
	}
}

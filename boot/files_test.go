package boot

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

func testPlanner(t *testing.T, mode IPXEMode) (*Planner, *store.Store) {
	t.Helper()
	st := store.New(t.TempDir())
	for _, g := range []int{1, 2} {
		generation(t, st, "img", g)
	}
	if err := st.Publish("img", 2); err != nil {
		t.Fatal(err)
	}
	table, _ := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:00:00:01", Hostname: "n1", Image: "img"}})
	return NewPlanner(Options{Nodes: table, Store: st, Defaults: nodes.Defaults{Console: "ttyS0,115200n8"},
		Loaders: map[string]string{"pxelinux.0": "/usr/lib/PXELINUX/pxelinux.0", "snponly.efi": "/usr/lib/ipxe/snponly.efi"},
		NFS:     netip.MustParseAddrPort("10.0.0.1:2049"), HTTP: netip.MustParseAddrPort("10.0.0.1:8080"), IPXE: mode}), st
}

func TestBootFile(t *testing.T) {
	p, st := testPlanner(t, IPXEOnly)
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	for _, c := range []struct {
		name string
		want File
	}{
		{"pxelinux.0", File{Name: "pxelinux.0", Kind: KindLoader, Path: "/usr/lib/PXELINUX/pxelinux.0"}},
		{"::/pxelinux.0", File{Name: "pxelinux.0", Kind: KindLoader, Path: "/usr/lib/PXELINUX/pxelinux.0"}},
		{"\\snponly.efi", File{Name: "snponly.efi", Kind: KindLoader, Path: "/usr/lib/ipxe/snponly.efi"}},
		{"pxelinux.cfg/01-52-54-00-00-00-01", File{Name: "pxelinux.cfg/01-52-54-00-00-00-01", Kind: KindConfig, MAC: mac, Image: "img", Generation: 2}},
		{"52-54-00-00-00-01.ipxe", File{Name: "52-54-00-00-00-01.ipxe", Kind: KindConfig, MAC: mac, Image: "img", Generation: 2}},
		{"images/img/1/vmlinuz", File{Name: "images/img/1/vmlinuz", Kind: KindKernel, Path: filepath.Join(st.BootDir("img", 1), "vmlinuz"), Image: "img", Generation: 1}},
		{"/images/img/2/initrd.img", File{Name: "images/img/2/initrd.img", Kind: KindInitrd, Path: filepath.Join(st.BootDir("img", 2), "initrd.img"), Image: "img", Generation: 2}},
	} {
		f, err := p.BootFile(c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if (f.Kind == KindConfig) != (len(f.Data) > 0) || (f.Kind == KindConfig) == (f.Path != "") {
			t.Errorf("%s: want data for generated files and a path for others: %+v", c.name, f)
		}
		f.Data = nil
		if f.Name != c.want.Name || f.Kind != c.want.Kind || f.Path != c.want.Path || f.MAC.String() != c.want.MAC.String() ||
			f.Image != c.want.Image || f.Generation != c.want.Generation {
			t.Errorf("%s: got %+v, want %+v", c.name, f, c.want)
		}
	}
	for name, want := range map[string]error{
		"../etc/passwd":                        ErrForbidden,
		"images/../../etc/passwd":              ErrForbidden,
		"images/img/3/vmlinuz":                 ErrNotFound, // no such generation
		"images/img/01/vmlinuz":                ErrNotFound,
		"images/img/1/root":                    ErrNotFound,
		"images/../img/1/vmlinuz":              ErrForbidden,
		"images/IMG/1/vmlinuz":                 ErrNotFound,
		"pxelinux.cfg/01-52:54:00:00:00:01":    ErrNotFound,
		"pxelinux.cfg/C0A80001":                ErrNotFound,
		"52:54:00:00:00:01.ipxe":               ErrNotFound,
		"x/52-54-00-00-00-01.ipxe":             ErrNotFound,
		"ldlinux.c32":                          ErrNotFound, // not configured
		"":                                     ErrNotFound,
		"a\x00b":                               ErrForbidden,
		strings.Repeat("a", 300):               ErrForbidden,
		"pxelinux.cfg/01-52-54-00-00-00-09":    ErrIgnored, // unknown_nodes: ignore
		"52-54-00-00-00-09.ipxe":               ErrIgnored,
		"/pxelinux.cfg/01-52-54-00-00-00-01/x": ErrNotFound,
	} {
		if _, err := p.BootFile(name); !errors.Is(err, want) {
			t.Errorf("%q: got %v, want %v", name, err, want)
		}
	}
	off, _ := testPlanner(t, IPXEOff)
	if _, err := off.BootFile("52-54-00-00-00-01.ipxe"); !errors.Is(err, ErrNotFound) {
		t.Errorf("iPXE script with the HTTP path off: %v", err)
	}
}

func TestFirstStage(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	for _, c := range []struct {
		mode IPXEMode
		c    Client
		want string
	}{
		{IPXEOff, Client{MAC: mac, Firmware: FirmwareBIOS}, "pxelinux.0"},
		{IPXEOff, Client{MAC: mac, Firmware: FirmwareBIOS, IPXE: true}, "pxelinux.0"},
		{IPXEOff, Client{MAC: mac, Firmware: FirmwareEFI64, HTTPBoot: true}, ""},
		{IPXEOnly, Client{MAC: mac, Firmware: FirmwareBIOS}, "pxelinux.0"},
		{IPXEOnly, Client{MAC: mac, Firmware: FirmwareEFI64}, "syslinux.efi"},
		{IPXEOnly, Client{MAC: mac, Firmware: FirmwareBIOS, IPXE: true}, "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe"},
		{IPXEOnly, Client{MAC: mac, Firmware: FirmwareEFI64, IPXE: true}, "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe"},
		{IPXEOnly, Client{MAC: mac, Firmware: FirmwareEFI64, HTTPBoot: true}, "http://10.0.0.1:8080/boot/snponly.efi"},
		{IPXEChain, Client{MAC: mac, Firmware: FirmwareBIOS}, "undionly.kpxe"},
		{IPXEChain, Client{MAC: mac, Firmware: FirmwareEFI64}, "snponly.efi"},
		{IPXEChain, Client{MAC: mac, Firmware: FirmwareEFI64, IPXE: true}, "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe"},
		{IPXEChain, Client{MAC: mac, Firmware: FirmwareUnsupported, IPXE: true}, ""},
	} {
		p, _ := testPlanner(t, c.mode)
		if got := p.FirstStage(c.c); got != c.want {
			t.Errorf("mode %d, %+v: got %q, want %q", c.mode, c.c, got, c.want)
		}
	}
	// Without an HTTP address a node can reach, nothing goes the HTTP way.
	p := NewPlanner(Options{IPXE: IPXEChain, HTTP: netip.MustParseAddrPort("0.0.0.0:8080")})
	if got := p.FirstStage(Client{MAC: mac, Firmware: FirmwareBIOS, IPXE: true}); got != "pxelinux.0" {
		t.Errorf("HTTP on a wildcard address: %q", got)
	}
}

func TestIPXEScript(t *testing.T) {
	p, _ := testPlanner(t, IPXEOnly)
	f, err := p.BootFile("52-54-00-00-00-01.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	s := string(f.Data)
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	spec, _ := p.Plan(mac)
	for _, want := range []string{
		"#!ipxe\n",
		"kernel http://10.0.0.1:8080/boot/images/img/2/vmlinuz?mac=52-54-00-00-00-01 initrd=initrd.img " + spec.Cmdline() +
			" bootd.ip=${ip}:${netmask}:${gateway}:${dns}:${mac} || goto failed\n",
		"initrd --name initrd.img http://10.0.0.1:8080/boot/images/img/2/initrd.img?mac=52-54-00-00-00-01 || goto failed\n",
		"boot || goto failed\n",
		":failed\n", "goto retry\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	// What iPXE makes of the script is what the init reads.
	line := strings.NewReplacer("${ip}", "10.0.0.7", "${netmask}", "255.255.255.0", "${gateway}", "", "${dns}", "10.0.0.53",
		"${mac}", "52:54:00:00:00:01").Replace(s)
	line = line[strings.Index(line, "initrd=initrd.img"):]
	line = line[:strings.Index(line, " || ")]
	got, err := ParseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Addr; a == nil || a.Prefix != netip.MustParsePrefix("10.0.0.7/24") || a.Gateway.IsValid() ||
		a.DNS != netip.MustParseAddr("10.0.0.53") || a.MAC.String() != "52:54:00:00:00:01" {
		t.Errorf("bootd.ip read as %+v", got.Addr)
	}
	if got.Export != "/img/2" || got.BootIF.String() != "52:54:00:00:00:01" {
		t.Errorf("params %+v", got)
	}
}

func TestStaticAddr(t *testing.T) {
	for v, ok := range map[string]bool{
		"10.0.0.7:255.255.255.0:10.0.0.1:10.0.0.53:52:54:00:00:00:01": true,
		"10.0.0.7:255.255.0.0:::52:54:00:00:00:01":                    true,
		"::::": false, // iPXE without an address
		"10.0.0.7:255.255.255.0:10.0.0.1:10.0.0.53":      false, // no MAC
		"10.0.0.7:0.0.0.0:::52:54:00:00:00:01":           false,
		"10.0.0.7:255.0.255.0:::52:54:00:00:00:01":       false, // not a netmask
		"0.0.0.0:255.255.255.0:::52:54:00:00:00:01":      false,
		"fd00::7:255.255.255.0:::52:54:00:00:00:01":      false,
		"10.0.0.7:255.255.255.0:nope::52:54:00:00:00:01": false,
		"10.0.0.7:255.255.255.0:::52:54:00:00:00":        false,
	} {
		p, err := ParseCmdline("bootd.nfs=10.0.0.1:2049:/img/1 bootd.ip=" + v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if (p.Addr != nil) != ok {
			t.Errorf("bootd.ip=%s: got %+v, want usable=%v", v, p.Addr, ok)
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"pxelinux.0": "pxelinux.0", "/pxelinux.0": "pxelinux.0", "::/pxelinux.0": "pxelinux.0",
		"::pxelinux.cfg/default": "pxelinux.cfg/default", "\\efi64\\syslinux.efi": "efi64/syslinux.efi",
		"a//b/./c": "a/b/c",
	} {
		if got, err := Clean(in); err != nil || got != want {
			t.Errorf("Clean(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "../x", "a/../../x", "a\\..\\..\\x", "a\x00b", "", "/", strings.Repeat("a", 300)} {
		if got, err := Clean(in); err == nil {
			t.Errorf("Clean(%q) = %q, want an error", in, got)
		}
	}
}

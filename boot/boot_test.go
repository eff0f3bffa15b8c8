package boot

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

func TestCmdlineRoundTrip(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	p := Params{NFS: netip.MustParseAddrPort("10.0.0.1:2049"), Export: "/bookworm/3", Hostname: "node01",
		BootIF: mac, Union: "aufs", TmpfsSize: "2G", Timeout: 90 * time.Second, Init: "/lib/systemd/systemd", Debug: true}
	line := "BOOT_IMAGE=vmlinuz quiet " + strings.Join(p.Args(), " ") + " console=ttyS0"
	got, err := ParseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	if got.NFS != p.NFS || got.Export != p.Export || got.Hostname != p.Hostname || got.BootIF.String() != mac.String() ||
		got.Union != p.Union || got.TmpfsSize != p.TmpfsSize || got.Timeout != p.Timeout || got.Init != p.Init || !got.Debug {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, p)
	}
	if got.Report.IsValid() || got.Log.IsValid() || got.Console.IsValid() {
		t.Errorf("addresses not on the command line came back: %+v", got)
	}
	// What pxelinux's IPAPPEND 2 writes parses too; defaults fill the rest.
	got, err = ParseCmdline("bootd.nfs=10.1.2.3:20490:/img/1 BOOTIF=01-aa-bb-cc-dd-ee-ff")
	if err != nil || got.BootIF.String() != "aa:bb:cc:dd:ee:ff" || got.Union != "overlay" || got.TmpfsSize != "50%" || got.Init != "/sbin/init" {
		t.Errorf("defaults: %+v %v", got, err)
	}
	for _, bad := range []string{"quiet", "bootd.nfs=10.0.0.1:/img/1", "bootd.nfs=host:2049:/x", "bootd.nfs=1.2.3.4:1:/x BOOTIF=zz", "bootd.nfs=1.2.3.4:1:/x bootd.union=btrfs", "bootd.nfs=1.2.3.4:1:/x bootd.timeout=-3"} {
		if _, err := ParseCmdline(bad); err == nil {
			t.Errorf("ParseCmdline(%q) accepted", bad)
		}
	}
}

// The three optional addresses: written only when a node can send to
// them, read back, an IPv6 address bracketed; malformed values refused.
func TestCmdlineAddresses(t *testing.T) {
	p := Params{NFS: netip.MustParseAddrPort("[fd00::1]:2049"), Export: "/img/1",
		Report: netip.MustParseAddrPort("[fd00::1]:8080"), Log: netip.MustParseAddrPort("10.0.0.1:514"),
		Console: netip.MustParseAddrPort("10.0.0.1:6666")}
	line := strings.Join(p.Args(), " ")
	for _, want := range []string{"bootd.report=[fd00::1]:8080", "bootd.log=10.0.0.1:514", "bootd.console=10.0.0.1:6666"} {
		if !strings.Contains(" "+line+" ", " "+want+" ") {
			t.Errorf("Args %q lack %s", line, want)
		}
	}
	got, err := ParseCmdline(line)
	if err != nil || got.Report != p.Report || got.Log != p.Log || got.Console != p.Console {
		t.Errorf("round trip of %q: %+v %v", line, got, err)
	}
	// Nothing a node cannot send to goes on the command line.
	for _, ap := range []netip.AddrPort{{}, netip.MustParseAddrPort("10.0.0.1:0"), netip.MustParseAddrPort("0.0.0.0:8080"),
		netip.MustParseAddrPort("[::]:8080"), netip.MustParseAddrPort("[fe80::1%br0]:8080")} {
		if a := strings.Join((Params{Report: ap, Log: ap, Console: ap}).Args(), " "); a != "" {
			t.Errorf("%v written as %q", ap, a)
		}
	}
	const nfs = "bootd.nfs=10.0.0.1:2049:/img/1 "
	for _, bad := range []string{"bootd.report=", "bootd.report=10.0.0.1", "bootd.log=10.0.0.1:", "bootd.console=host:6666",
		"bootd.report=fd00::1:8080", "bootd.log=10.0.0.1:65536", "bootd.console=10.0.0.1:0", "bootd.report=0.0.0.0:8080",
		"bootd.report=[fe80::1%eth0]:8080", "bootd.console=[10.0.0.1]:6666", "bootd.log=10.0.0.1:514:x"} {
		_, err := ParseCmdline(nfs + bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if k, _, _ := strings.Cut(bad, "="); !strings.Contains(err.Error(), k+"=") {
			t.Errorf("%q: error %q does not name %s", bad, err, k)
		}
	}
}

func TestParamsImage(t *testing.T) {
	for export, want := range map[string]string{
		"/bookworm/3": "bookworm 3 true", "/a.b-c_d/120": "a.b-c_d 120 true",
		"/bookworm": " 0 false", "bookworm/3": " 0 false", "/bookworm/0": " 0 false", "/bookworm/03": " 0 false",
		"/bookworm/3/x": " 0 false", "/Book/3": " 0 false", "/../3": " 0 false", "/bookworm/+3": " 0 false", "": " 0 false",
	} {
		image, gen, ok := Params{Export: export}.Image()
		if got := fmt.Sprint(image, " ", gen, " ", ok); got != want {
			t.Errorf("Image of %q: %s, want %s", export, got, want)
		}
	}
}

// generation makes a generation the store will publish: a root tree and
// the boot files.
func generation(t *testing.T, st *store.Store, name string, gen int) {
	t.Helper()
	os.MkdirAll(st.RootDir(name, gen), 0o755)
	os.MkdirAll(st.BootDir(name, gen), 0o755)
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(st.BootDir(name, gen), f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPlanPinsCurrentGeneration(t *testing.T) {
	st := store.New(t.TempDir())
	for _, g := range []int{1, 2} {
		generation(t, st, "img", g)
	}
	if err := st.Publish("img", 1); err != nil {
		t.Fatal(err)
	}
	table, _ := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:00:00:01", Hostname: "n1", Image: "img", Append: "x=1"}})
	o := Options{Nodes: table, Defaults: nodes.Defaults{Console: "ttyS1,57600n8", Append: "quiet"}, Store: st,
		NFS: netip.MustParseAddrPort("10.0.0.1:2049")}
	p := NewPlanner(o)
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	s, err := p.Plan(mac)
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation != 1 || s.Kernel != "images/img/1/vmlinuz" {
		t.Errorf("plan %+v", s)
	}
	if s.Params.Report.IsValid() || strings.Contains(s.Cmdline(), "bootd.report") {
		t.Errorf("a planner without a report address: %q", s.Cmdline())
	}
	o.HTTP, o.Log, o.Console = netip.MustParseAddrPort("10.0.0.1:8080"), netip.MustParseAddrPort("10.0.0.1:514"), netip.MustParseAddrPort("10.0.0.1:6666")
	p = NewPlanner(o)
	if s, _ := p.Plan(mac); !strings.Contains(s.Cmdline(), "bootd.report=10.0.0.1:8080 bootd.log=10.0.0.1:514 bootd.console=10.0.0.1:6666") {
		t.Errorf("plan with report, log and console addresses: %q", s.Cmdline())
	}
	cfg := s.PXELinuxConfig()
	for _, want := range []string{"SERIAL 1 57600", "APPEND console=tty0 console=ttyS1,57600n8 bootd.nfs=10.0.0.1:2049:/img/1 bootd.hostname=n1 BOOTIF=01-52-54-00-00-00-01 quiet x=1"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if err := st.Publish("img", 2); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.Plan(mac); s.Generation != 2 || !strings.Contains(s.Cmdline(), ":/img/2") {
		t.Errorf("after publishing 2: %+v", s)
	}
	other, _ := net.ParseMAC("52:54:00:00:00:09")
	if _, err := p.Plan(other); err != ErrIgnored {
		t.Errorf("unknown node: %v", err)
	}
	o.BootUnknown = true
	p = NewPlanner(o)
	if _, err := p.Plan(other); err == nil || !strings.Contains(err.Error(), "no image") {
		t.Errorf("unknown node without defaults.image: %v", err)
	}
	os.RemoveAll(filepath.Join(st.ImagesDir(), "img", "current"))
	if _, err := p.Plan(mac); err == nil {
		t.Error("plan without a current generation")
	}
}

func TestFirmware(t *testing.T) {
	for a, want := range map[Arch]string{0: "pxelinux.0", 7: "syslinux.efi", 9: "syslinux.efi", 6: "", 11: ""} {
		if got := FirmwareFor(a).Loader(); got != want {
			t.Errorf("arch %d: %q, want %q", a, got, want)
		}
	}
}

// FuzzParseCmdline: any kernel command line gives parameters or an error,
// never a panic; what it accepts names an absolute export, and written
// back with Args it reads the same.
func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 bootd.nfs=10.0.0.1:2049:/bookworm/3 bootd.hostname=n1 BOOTIF=01-52-54-00-12-34-56 bootd.timeout=60 bootd.debug")
	f.Add("bootd.nfs=[fe80::1]:2049:/a/1 bootd.union=aufs bootd.tmpfs=1G bootd.init=/lib/systemd/systemd")
	f.Add("bootd.nfs=:/ BOOTIF=zz bootd.timeout=-1")
	f.Add("bootd.nfs=10.0.0.1:2049:/a/1 bootd.report=10.0.0.1:8080 bootd.log=[fd00::1]:514 bootd.console=10.0.0.1:6666")
	f.Add("bootd.nfs=10.0.0.1:2049:/a/1 bootd.report=[fe80::1%eth0]:8080 bootd.console=[::ffff:10.0.0.1]:6666")
	f.Fuzz(func(t *testing.T, cmdline string) {
		p, err := ParseCmdline(cmdline)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p.Export, "/") {
			t.Fatalf("export %q from %q", p.Export, cmdline)
		}
		if len(p.BootIF) != 0 && len(p.BootIF) != 6 {
			return // a MAC Args does not write back
		}
		again, err := ParseCmdline(strings.Join(p.Args(), " "))
		if err != nil {
			t.Fatalf("%q: its own Args %q do not parse: %v", cmdline, p.Args(), err)
		}
		if fmt.Sprint(again) != fmt.Sprint(p) {
			t.Fatalf("%q: read back as %+v, want %+v", cmdline, again, p)
		}
	})
}

// TestPlannerUpdate: after Update the planner answers from the new
// options (a node added, unknown_nodes changed, iPXE turned on), and
// answers made while Update runs each come from one snapshot: run with
// -race.
func TestPlannerUpdate(t *testing.T) {
	st := store.New(t.TempDir())
	generation(t, st, "img", 1)
	if err := st.Publish("img", 1); err != nil {
		t.Fatal(err)
	}
	before, _ := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:00:00:01", Image: "img"}})
	after, _ := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:00:00:01", Image: "img"},
		{MAC: "52:54:00:00:00:02", Hostname: "n2", Image: "img", IP: "10.0.0.2"}})
	old := Options{Nodes: before, Store: st, NFS: netip.MustParseAddrPort("10.0.0.1:2049"),
		Loaders: map[string]string{"pxelinux.0": "/a"}}
	p := NewPlanner(old)
	n2, _ := net.ParseMAC("52:54:00:00:00:02")
	if _, err := p.Plan(n2); err != ErrIgnored {
		t.Fatalf("a node not yet in the table: %v", err)
	}
	if _, err := p.BootFile("52-54-00-00-00-02.ipxe"); err == nil {
		t.Fatal("an iPXE script without HTTP")
	}
	stop, done, running := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			if i == 1 {
				close(running)
			}
			select {
			case <-stop:
				return
			default:
			}
			// Either table, never a node of one with the defaults of the other.
			if s, err := p.Plan(n2); err == nil && s.Hostname != "n2" {
				t.Errorf("a plan of a half-updated table: %+v", s)
			}
			p.Serves(n2)
			p.BootFile("pxelinux.cfg/01-52-54-00-00-00-02")
			p.FirstStage(Client{MAC: n2, Firmware: FirmwareBIOS, IPXE: true})
		}
	}()
	neu := old
	neu.Nodes, neu.IPXE, neu.HTTP = after, IPXEOnly, netip.MustParseAddrPort("10.0.0.1:8080")
	<-running
	for range 100 {
		p.Update(old)
		p.Update(neu)
	}
	close(stop)
	<-done
	s, err := p.Plan(n2)
	if err != nil || s.Hostname != "n2" || s.Generation != 1 {
		t.Errorf("a node added by Update: %+v %v", s, err)
	}
	if f, err := p.BootFile("52-54-00-00-00-02.ipxe"); err != nil || !strings.Contains(string(f.Data), "images/img/1/vmlinuz") {
		t.Errorf("iPXE script after Update: %v %q", err, f.Data)
	}
	if n, ok := p.NodeAt(netip.MustParseAddr("10.0.0.2")); !ok || n.Hostname != "n2" {
		t.Errorf("NodeAt after Update: %+v %v", n, ok)
	}
	if got := p.Options().Nodes.All(); len(got) != 2 {
		t.Errorf("Options().Nodes after Update: %d nodes", len(got))
	}
	// The planner keeps its own copy of the loaders.
	neu.Loaders["pxelinux.0"] = "/changed"
	if f, err := p.BootFile("pxelinux.0"); err != nil || f.Path != "/a" {
		t.Errorf("loader after the caller changed its map: %+v %v", f, err)
	}
}

func TestLoadersServed(t *testing.T) {
	http := netip.MustParseAddrPort("10.0.0.1:8080")
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{IPXE: IPXEOff, HTTP: http}, "pxelinux.0 ldlinux.c32 syslinux.efi ldlinux.e64"},
		{Options{IPXE: IPXEOnly, HTTP: http}, "pxelinux.0 ldlinux.c32 syslinux.efi ldlinux.e64 snponly.efi"},
		{Options{IPXE: IPXEChain, HTTP: http}, "undionly.kpxe snponly.efi"},
		// Without HTTP, chain means nothing: every firmware gets syslinux.
		{Options{IPXE: IPXEChain}, "pxelinux.0 ldlinux.c32 syslinux.efi ldlinux.e64"},
	} {
		if got := strings.Join(NewPlanner(c.o).LoadersServed(), " "); got != c.want {
			t.Errorf("IPXE %d, HTTP %v: %s, want %s", c.o.IPXE, c.o.HTTP, got, c.want)
		}
	}
}

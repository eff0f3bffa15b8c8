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

func TestPlanPinsCurrentGeneration(t *testing.T) {
	st := store.New(t.TempDir())
	for _, g := range []int{1, 2} {
		os.MkdirAll(st.RootDir("img", g), 0o755)
	}
	st.Publish("img", 1)
	table, _ := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:00:00:01", Hostname: "n1", Image: "img", Append: "x=1"}})
	p := &Planner{Nodes: table, Defaults: nodes.Defaults{Console: "ttyS1,57600n8", Append: "quiet"}, Store: st,
		NFS: netip.MustParseAddrPort("10.0.0.1:2049")}
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	s, err := p.Plan(mac)
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation != 1 || s.Kernel != "images/img/1/vmlinuz" {
		t.Errorf("plan %+v", s)
	}
	cfg := s.PXELinuxConfig()
	for _, want := range []string{"SERIAL 1 57600", "APPEND console=tty0 console=ttyS1,57600n8 bootd.nfs=10.0.0.1:2049:/img/1 bootd.hostname=n1 BOOTIF=01-52-54-00-00-00-01 quiet x=1"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	st.Publish("img", 2)
	if s, _ := p.Plan(mac); s.Generation != 2 || !strings.Contains(s.Cmdline(), ":/img/2") {
		t.Errorf("after publishing 2: %+v", s)
	}
	other, _ := net.ParseMAC("52:54:00:00:00:09")
	if _, err := p.Plan(other); err != ErrIgnored {
		t.Errorf("unknown node: %v", err)
	}
	p.BootUnknown = true
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

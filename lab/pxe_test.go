package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func buildIn(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// markerInitrd builds an initrd whose /init prints a marker and the
// kernel command line, then powers off.
func markerInitrd(t *testing.T, out string) {
	t.Helper()
	root := t.TempDir()
	buildIn(t, "..", filepath.Join(root, "init"), "./lab/testdata/markerinit")
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if out, err := exec.Command("mknod", filepath.Join(root, "dev/console"), "c", "5", "1").CombinedOutput(); err != nil {
		t.Fatalf("mknod: %v %s", err, out)
	}
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v %s", err, b)
	}
}

// TestPXEBootBesideSiteDHCP boots a BIOS node (SeaBIOS + iPXE ROM) and a
// UEFI node (OVMF) in one lab: the site's dnsmasq gives them addresses,
// bootd in proxy mode gives them their loader, config, kernel and initrd.
func TestPXEBootBesideSiteDHCP(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU nodes: not in -short")
	}
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bootd := filepath.Join(dir, "bootd")
	if err := BuildBootd("..", bootd); err != nil {
		t.Fatal(err)
	}
	kernel, _, err := HostKernel()
	if err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(dir, "state")
	boot := filepath.Join(state, "images", "marker", "1", "boot")
	os.MkdirAll(filepath.Join(state, "images", "marker", "1", "root", "etc"), 0o755)
	os.MkdirAll(boot, 0o755)
	if b, err := os.ReadFile(kernel); err != nil {
		t.Fatal(err)
	} else {
		os.WriteFile(filepath.Join(boot, "vmlinuz"), b, 0o644)
	}
	markerInitrd(t, filepath.Join(boot, "initrd.img"))
	os.Symlink("1", filepath.Join(state, "images", "marker", "current"))

	cfg := filepath.Join(dir, "bootd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`state_dir: %s
interface: %s
dhcp: {mode: proxy}
tftp: {listen: "0.0.0.0:69"}
nfs: {listen: "%s:2049", allow: ["10.213.0.0/24"]}
http: {listen: "%s:%d", boot: off}
defaults: {image: marker, console: "ttyS0,115200n8", append: "panic=-1"}
unknown_nodes: ignore
nodes:
  - {mac: "52:54:00:bd:00:01", hostname: bios-node}
  - {mac: "52:54:00:bd:00:02", hostname: uefi-node}
`, state, MasterIf, MasterIP, MasterIP, APIPort)), 0o644)

	l, err := Up(filepath.Join(dir, "lab"), fmt.Sprintf("bdt%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down()
	if err := l.StartSiteDHCP(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start("master", "bootd", bootd, "serve", "--config", cfg, "--log-level", "debug"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)

	nodes := []NodeSpec{
		{Name: "bios-node", MAC: "52:54:00:bd:00:01", Firmware: BIOS},
		{Name: "uefi-node", MAC: "52:54:00:bd:00:02", Firmware: UEFI},
	}
	var wg sync.WaitGroup
	for _, spec := range nodes {
		n, err := l.StartNode(spec)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			out, err := n.WaitConsole("BOOTD-MARKER-OK", 240*time.Second)
			if err != nil {
				t.Errorf("%v\nconsole tail:\n%s", err, tail(out, 3000))
				return
			}
			t.Logf("%s (%s) ran the initrd after %v", n.Name, n.Firmware, time.Since(start).Round(time.Second))
			line := out[strings.Index(out, "BOOTD-MARKER-OK"):]
			line = line[:strings.IndexByte(line+"\n", '\n')]
			for _, want := range []string{
				"bootd.nfs=" + MasterIP + ":2049:/marker/1",
				"bootd.hostname=" + n.Name,
				"BOOTIF=01-" + strings.ReplaceAll(n.MAC, ":", "-"),
				"console=ttyS0,115200n8",
				"panic=-1",
			} {
				if !strings.Contains(line, want) {
					t.Errorf("%s: kernel command line lacks %q: %s", n.Name, want, line)
				}
			}
		}()
	}
	wg.Wait()

	// The addresses came from the site's DHCP server, not from bootd.
	leases := l.Leases()
	for _, n := range nodes {
		if !strings.Contains(leases, n.MAC) {
			t.Errorf("dnsmasq leased nothing to %s:\n%s", n.MAC, leases)
		}
	}
	// What bootd saw, from its API: the proxy answers (port 4011 for
	// UEFI), then the loader, its config and the boot files over TFTP
	// (http.boot: off, the path of firmware that is not iPXE).
	api := l.API()
	for _, n := range nodes {
		d, err := api.Node(context.Background(), n.MAC)
		if err != nil || len(d.Boots) == 0 {
			t.Errorf("%s: no record: %v", n.Name, err)
			continue
		}
		var got []string
		for _, a := range d.Boots[len(d.Boots)-1].Stages {
			got = append(got, string(a.Stage)+": "+a.Detail)
		}
		all := strings.Join(got, "\n")
		wants := []string{"dhcp: proxy dhcp: bios offer via port 67: pxelinux.0", "loader: tftp pxelinux.0",
			"config: tftp pxelinux.cfg/01-" + strings.ReplaceAll(n.MAC, ":", "-") + " -> marker/1",
			"kernel: tftp images/marker/1/vmlinuz", "initrd: tftp images/marker/1/initrd.img"}
		if n.Firmware == UEFI {
			wants[0], wants[1] = "dhcp: proxy dhcp: uefi offer via port 67", "loader: tftp syslinux.efi"
		}
		for _, want := range wants {
			if !strings.Contains(all, want) {
				t.Errorf("%s: record lacks %q:\n%s", n.Name, want, all)
			}
		}
	}
	logb, _ := os.ReadFile(filepath.Join(l.Dir, "bootd.log"))
	log := string(logb)
	if t.Failed() {
		t.Logf("bootd log:\n%s", tail(log, 6000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

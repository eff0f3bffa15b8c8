package initrd_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/initrd"
	"github.com/bootd/bootd/lab"
	"net"
	"net/netip"
)

const nodeInit = `#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin
/bin/busybox --install -s
echo NODE-MARKER-BEGIN
echo "HOSTNAME=$(hostname)"
echo "ETC-HOSTNAME=$(cat /etc/hostname)"
echo MOUNTS-BEGIN
cat /proc/mounts
echo MOUNTS-END
if echo node-write > /etc/written-by-node; then echo "WRITE-OK $(cat /etc/written-by-node)"; fi
if touch /run/bootd/ro/x 2>/dev/null; then echo LOWER-WRITABLE; else echo LOWER-READONLY; fi
echo LEASE-BEGIN
cat /run/bootd/lease.json
echo LEASE-END
echo NODE-MARKER-DONE
sync
poweroff -f
`

// makeTestImage builds a small image: busybox, an init script that
// reports what the node sees, and the host kernel with the modules the
// initrd takes.
func makeTestImage(t *testing.T, state string) (root, kver string) {
	t.Helper()
	_, kver, err := lab.HostKernel()
	if err != nil {
		t.Fatal(err)
	}
	root = filepath.Join(state, "images", "test", "1", "root")
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "boot", "lib/modules/" + kver} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	cp := func(src, dst string) {
		t.Helper()
		if out, err := exec.Command("cp", "-aL", src, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v %s", src, err, out)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not installed: apt-get install busybox")
	}
	cp(bb, filepath.Join(root, "bin/busybox"))
	out, _ := exec.Command("ldd", bb).Output()
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755)
			cp(f, filepath.Join(root, f))
		}
	}
	os.WriteFile(filepath.Join(root, "sbin/init"), []byte(nodeInit), 0o755)
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("image-default\n"), 0o644)
	cp("/boot/vmlinuz-"+kver, filepath.Join(root, "boot"))
	cp("/boot/config-"+kver, filepath.Join(root, "boot"))
	// Only the modules the initrd can take, and the index.
	hostMods := filepath.Join("/lib/modules", kver)
	mods, err := initrd.ReadModules(hostMods)
	if err != nil {
		t.Fatal(err)
	}
	paths, _ := mods.Closure(append(append([]string{}, initrd.BaseModules...), initrd.NICModules...))
	for _, p := range append(paths, "modules.dep", "modules.alias", "modules.softdep", "modules.builtin") {
		dst := filepath.Join(root, "lib/modules", kver, p)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		cp(filepath.Join(hostMods, p), dst)
	}
	os.Symlink("1", filepath.Join(state, "images", "test", "current"))
	return root, kver
}

func fastTempDir(t *testing.T) string {
	if d, err := os.MkdirTemp("/dev/shm", "bootd-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return t.TempDir()
}

// TestQEMUBootsNFSRoot boots the Debian kernel with the generated initrd
// in the lab: the site's dnsmasq gives the address, bootd serves the root
// over NFS, and the image's init reports what the node sees. e1000 and
// virtio-net, in one run.
func TestQEMUBootsNFSRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU nodes: not in -short")
	}
	if err := lab.Check(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bootd := filepath.Join(dir, "bootd")
	if err := lab.BuildBootd("..", bootd); err != nil {
		t.Fatal(err)
	}
	state := fastTempDir(t)
	root, _ := makeTestImage(t, state)
	cfg := filepath.Join(dir, "bootd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`state_dir: %s
dhcp: {mode: "off"}
tftp: {listen: ""}
nfs: {listen: "%s:2049", allow: ["10.213.0.0/24"], secure_ports: true}
`, state, lab.MasterIP)), 0o644)
	out, err := exec.Command(bootd, "initrd", "build", "--config", cfg, "--image", "test").CombinedOutput()
	if err != nil {
		t.Fatalf("bootd initrd build: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
	bootDir := filepath.Join(state, "images", "test", "1", "boot")

	l, err := lab.Up(filepath.Join(dir, "lab"), fmt.Sprintf("bdi%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down()
	if err := l.StartSiteDHCP(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start("master", "bootd", bootd, "serve", "--config", cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	var wg sync.WaitGroup
	for i, nic := range []string{"e1000", "virtio-net-pci"} {
		mac := fmt.Sprintf("52:54:00:bd:01:%02x", i+1)
		hw, _ := net.ParseMAC(mac)
		name := "node-" + strings.TrimSuffix(nic, "-net-pci")
		params := boot.Params{NFS: netip.MustParseAddrPort(lab.MasterIP + ":2049"), Export: "/test/1", Hostname: name, BootIF: hw, Timeout: 120 * time.Second}
		n, err := l.StartNode(lab.NodeSpec{Name: name, MAC: mac, NIC: nic,
			Kernel: filepath.Join(bootDir, "vmlinuz"), Initrd: filepath.Join(bootDir, "initrd.img"),
			Append: "console=ttyS0,115200n8 panic=-1 " + strings.Join(params.Args(), " ")})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			con, err := n.WaitConsole("NODE-MARKER-DONE", 240*time.Second)
			if err != nil {
				t.Errorf("%v\nconsole:\n%s", err, tailStr(con, 4000))
				return
			}
			t.Logf("%s (%s) ran the image's init after %v", name, nic, time.Since(start).Round(time.Second))
			for _, line := range strings.Split(con, "\n") {
				if strings.Contains(line, "bootd-init:") {
					t.Logf("%s: %s", name, strings.TrimSpace(line))
				}
			}
			mounts := between(con, "MOUNTS-BEGIN", "MOUNTS-END")
			for _, want := range []string{
				"overlay / overlay rw,", "lowerdir=/run/bootd/ro,upperdir=/run/bootd/rw/upper",
				lab.MasterIP + ":/test/1 /run/bootd/ro nfs ro,", "vers=3", "tmpfs /run/bootd/rw tmpfs",
			} {
				if !strings.Contains(mounts, want) {
					t.Errorf("%s: mount table lacks %q:\n%s", name, want, mounts)
				}
			}
			for _, want := range []string{"HOSTNAME=" + name, "ETC-HOSTNAME=" + name, "WRITE-OK node-write", "LOWER-READONLY",
				`"mac": "` + mac + `"`, `"export": "/test/1"`, `"address": "10.213.0.1`} {
				if !strings.Contains(con, want) {
					t.Errorf("%s: console lacks %q", name, want)
				}
			}
		}()
	}
	wg.Wait()
	// Nothing the nodes wrote reached the export.
	if _, err := os.Stat(filepath.Join(root, "etc/written-by-node")); err == nil {
		t.Error("a node's write reached the export")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(b) != "image-default\n" {
		t.Errorf("the export's /etc/hostname changed: %q", b)
	}
	if t.Failed() {
		b, _ := os.ReadFile(filepath.Join(l.Dir, "bootd.log"))
		t.Logf("bootd log:\n%s", tailStr(string(b), 3000))
	}
}

func between(s, a, b string) string {
	i := strings.Index(s, a)
	j := strings.Index(s, b)
	if i < 0 || j < i {
		return ""
	}
	return s[i:j]
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

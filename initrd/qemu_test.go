package initrd_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/initrd"
	"github.com/bootd/bootd/lab"
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
echo REPORT-ENV-BEGIN
cat /run/bootd/report.env
echo REPORT-ENV-END
echo "FORWARD: $(grep -v '^#' /run/bootd/rsyslog-forward.conf)"
echo "NETCONSOLE-MARKER-$(hostname)" > /dev/kmsg
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
	paths, _ := mods.Closure(append(append(append([]string{}, initrd.BaseModules...), initrd.NICModules...), initrd.OptionalModules...))
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
	reports, consoles := listenInMaster(t, l.NS("master"), lab.MasterIP+":18080", lab.MasterIP+":16666")

	var wg sync.WaitGroup
	for i, nic := range []string{"e1000", "virtio-net-pci"} {
		mac := fmt.Sprintf("52:54:00:bd:01:%02x", i+1)
		hw, _ := net.ParseMAC(mac)
		name := "node-" + strings.TrimSuffix(nic, "-net-pci")
		params := boot.Params{NFS: netip.MustParseAddrPort(lab.MasterIP + ":2049"), Export: "/test/1", Hostname: name, BootIF: hw, Timeout: 120 * time.Second,
			Report: netip.MustParseAddrPort(lab.MasterIP + ":18080"), Log: netip.MustParseAddrPort(lab.MasterIP + ":1514"),
			Console: netip.MustParseAddrPort(lab.MasterIP + ":16666")}
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
				`"mac": "` + mac + `"`, `"export": "/test/1"`, `"address": "10.213.0.1`,
				"FORWARD: *.* @@" + lab.MasterIP + ":1514", "reported the root stage to bootd at " + lab.MasterIP + ":18080",
				"kernel console sent to " + lab.MasterIP + ":16666"} {
				if !strings.Contains(con, want) {
					t.Errorf("%s: console lacks %q", name, want)
				}
			}
			env := between(con, "REPORT-ENV-BEGIN", "REPORT-ENV-END")
			for _, want := range []string{"BOOTD_REPORT='" + lab.MasterIP + ":18080'", "BOOTD_REPORT_HOST='" + lab.MasterIP + "'", "BOOTD_REPORT_PORT='18080'",
				"BOOTD_MAC='" + mac + "'", "BOOTD_IMAGE='test'", "BOOTD_GENERATION='1'", "BOOTD_HOSTNAME='" + name + "'"} {
				if !strings.Contains(env, want) {
					t.Errorf("%s: report.env lacks %s:\n%s", name, want, env)
				}
			}
			// The master is on the link: netconsole got its MAC.
			if strings.Contains(con, "is broadcast") {
				t.Errorf("%s: netconsole broadcasts", name)
			}
			r, ok := reports.wait(mac, 5*time.Second)
			if !ok {
				t.Errorf("%s: no root report", name)
			} else if r.Stage != "root" || r.Image != "test" || r.Generation != 1 || r.Hostname != name || !strings.HasPrefix(r.Detail, "root mounted in ") {
				t.Errorf("%s: report %+v", name, r)
			}
			// What the kernel printed before the NIC was up (the command
			// line names the node), and after switch_root by netconsole.
			if text := consoles.wait(name, "NETCONSOLE-MARKER-"+name, 5*time.Second); !strings.Contains(text, "Linux version") ||
				!strings.Contains(text, "] NETCONSOLE-MARKER-"+name+"\n") {
				t.Errorf("%s: kernel console received:\n%s", name, tailStr(text, 3000))
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

// nodeReport is what the test's report server kept of a POST.
type nodeReport struct {
	MAC, Stage, Image, Hostname, Detail string
	Generation                          int
}

type reportBox struct {
	mu    sync.Mutex
	byMAC map[string]nodeReport
}

func (b *reportBox) wait(mac string, d time.Duration) (nodeReport, bool) {
	for end := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		b.mu.Lock()
		r, ok := b.byMAC[mac]
		b.mu.Unlock()
		if ok || time.Now().After(end) {
			return r, ok
		}
	}
}

// consoleBox keeps the datagrams received, by source address.
type consoleBox struct {
	mu    sync.Mutex
	bySrc map[string]*strings.Builder
}

// wait returns the console of the source whose text names the node
// (bootd.hostname= on the kernel command line), once it holds want.
func (b *consoleBox) wait(name, want string, d time.Duration) string {
	for end := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		b.mu.Lock()
		text := ""
		for _, s := range b.bySrc {
			if strings.Contains(s.String(), "bootd.hostname="+name+" ") {
				text = s.String()
			}
		}
		b.mu.Unlock()
		if strings.Contains(text, want) || time.Now().After(end) {
			return text
		}
	}
}

// listenInMaster stands for bootd's report and console receivers in the
// lab's master namespace: the sockets are made on a thread moved into it,
// which is never handed back to the runtime.
func listenInMaster(t *testing.T, ns, httpAddr, udpAddr string) (*reportBox, *consoleBox) {
	t.Helper()
	type socks struct {
		l   net.Listener
		pc  net.PacketConn
		err error
	}
	ch := make(chan socks)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
		var s socks
		f, err := os.Open("/run/netns/" + ns)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err == nil {
			if s.l, err = net.Listen("tcp", httpAddr); err == nil {
				s.pc, err = net.ListenPacket("udp", udpAddr)
			}
		}
		s.err = err
		ch <- s
	}()
	s := <-ch
	if s.err != nil {
		t.Fatalf("listening in %s: %v", ns, s.err)
	}
	reports := &reportBox{byMAC: map[string]nodeReport{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep nodeReport
		if r.Method != http.MethodPost || r.URL.Path != boot.ReportPath || r.Header.Get("Content-Type") != "application/json" ||
			json.NewDecoder(r.Body).Decode(&rep) != nil {
			t.Errorf("a malformed report: %s %s", r.Method, r.URL)
			http.Error(w, "malformed", http.StatusBadRequest)
			return
		}
		reports.mu.Lock()
		reports.byMAC[rep.MAC] = rep
		reports.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(s.l)
	t.Cleanup(func() { srv.Close() })
	consoles := &consoleBox{bySrc: map[string]*strings.Builder{}}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, src, err := s.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ip := src.(*net.UDPAddr).IP.String()
			consoles.mu.Lock()
			if consoles.bySrc[ip] == nil {
				consoles.bySrc[ip] = new(strings.Builder)
			}
			consoles.bySrc[ip].Write(buf[:n])
			consoles.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.pc.Close() })
	return reports, consoles
}

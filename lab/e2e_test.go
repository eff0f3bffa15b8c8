package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/web"
)

// TestEndToEnd is the whole point of bootd: `bootd lab up` builds a Debian
// image, and a BIOS node (SeaBIOS + iPXE, e1000) and a UEFI node (OVMF,
// virtio-net) PXE-boot it from bootd beside the site's dnsmasq, to a login
// prompt. Then the test logs in on each serial console and checks what a
// diskless node must be. Both supported suites, one after the other: Debian
// 13 (the default) over bootd's default path (the NIC ROMs are iPXE: an
// iPXE script, kernel and initrd over HTTP), and Debian 12 over TFTP
// (http.boot: off; pxelinux.0 and syslinux.efi), the path of firmware that
// is not iPXE.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Debian image and boots QEMU nodes: not in -short")
	}
	bootd := labBootd(t)
	for i, run := range []struct{ suite, boot string }{{"trixie", "chain"}, {"bookworm", "off"}} {
		t.Run(run.suite, func(t *testing.T) { endToEnd(t, bootd, run.suite, run.boot, i) })
	}
}

func endToEnd(t *testing.T, bootd, suite, bootMode string, i int) {
	dir := labDir(t)

	opt := Options{Dir: dir, Name: fmt.Sprintf("bde%d%d", os.Getpid()%100000, i), Nodes: 2, Firmware: "mixed", Bootd: bootd,
		Suite: suite, Out: tWriter{t}, Timeout: 8 * time.Minute, Boot: bootMode}
	ctx := context.Background()
	start := time.Now()
	c, err := UpCluster(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Down()
	t.Logf("image and initrd ready, nodes powered on after %v", time.Since(start).Round(time.Second))
	waitUp(t, c)
	checkRecords(t, c, suite, bootMode != "off")
	var wg sync.WaitGroup
	for _, r := range c.Reports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			checkNode(t, r, dir, suite)
		}()
	}
	wg.Wait()
	checkLogsReachRecords(t, c)
	if i == 0 {
		checkOnlineUpdate(t, c, suite)
		checkPage(t, c)
		checkDownAndLost(t, c)
	}
}

// checkRecords reads both nodes' boots from bootd's API: every stage from
// DHCP to up, in order, each with its time, on the image they booted. Over
// HTTP, iPXE firmware fetches no loader: its config stage is the script.
func checkRecords(t *testing.T, c *Cluster, image string, overHTTP bool) {
	api := c.API()
	for _, r := range c.Reports {
		d, err := api.Node(context.Background(), r.MAC)
		if err != nil {
			t.Errorf("%s: API: %v", r.Name, err)
			continue
		}
		if len(d.Boots) == 0 {
			t.Errorf("%s: no boot recorded", r.Name)
			continue
		}
		b := d.Boots[len(d.Boots)-1]
		var got []string
		for i, a := range b.Stages {
			got = append(got, string(a.Stage))
			if i > 0 && a.Time.Before(b.Stages[i-1].Time) {
				t.Errorf("%s: %s at %v, before %s", r.Name, a.Stage, a.Time, b.Stages[i-1].Stage)
			}
		}
		want := strings.Join(Stages, " ")
		if overHTTP {
			want = strings.Replace(want, " loader", "", 1)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: stages %v, want %s", r.Name, got, want)
		}
		// Over HTTP the script, kernel and initrd came from bootd's HTTP
		// server, and the init took the firmware's address.
		for _, a := range b.Stages {
			if proto := strings.Fields(a.Detail + " x")[0]; (a.Stage == "config" || a.Stage == "kernel" || a.Stage == "initrd") &&
				proto != map[bool]string{true: "http", false: "tftp"}[overHTTP] {
				t.Errorf("%s: %s by %q, want over HTTP %v", r.Name, a.Stage, a.Detail, overHTTP)
			}
		}
		if b.Start.Before(r.Start.Add(-time.Second)) || d.Hostname != r.Hostname || d.Image != image || d.Generation != 1 || d.IP == "" || d.Stage != "up" {
			t.Errorf("%s: record: start %v (powered on %v), hostname %q, image %s/%d, ip %q, stage %s", r.Name, b.Start, r.Start, d.Hostname, d.Image, d.Generation, d.IP, d.Stage)
		}
		// The kernel's console, sent by netconsole from the init on: the
		// first lines the kernel printed are there.
		if !hasLine(d.Console, "Linux version") {
			t.Errorf("%s: the console record lacks the kernel's first lines (%d lines)", r.Name, len(d.Console))
		}
	}
}

func hasLine(lines []events.Line, want string) bool {
	for _, l := range lines {
		if strings.Contains(l.Text, want) {
			return true
		}
	}
	return false
}

// checkLogsReachRecords: what checkNode logged on each node is in its
// record's syslog tail.
func checkLogsReachRecords(t *testing.T, c *Cluster) {
	api := c.API()
	for _, r := range c.Reports {
		var d web.NodeDetail
		for range 50 {
			d, _ = api.Node(context.Background(), r.MAC)
			if hasLine(d.Syslog, "hello-from-"+r.Name) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !hasLine(d.Syslog, "hello-from-"+r.Name) {
			t.Errorf("%s: its syslog line is not in its record (%d lines)", r.Name, len(d.Syslog))
		}
	}
}

// checkPage loads the status page and a node's page in headless Chromium,
// inside the lab, and keeps screenshots.
func checkPage(t *testing.T, c *Cluster) {
	dir := os.Getenv("BOOTD_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	os.MkdirAll(dir, 0o755)
	ctx := context.Background()
	for _, p := range []struct{ path, shot string }{{"/", "lab-status.png"}, {"/nodes/node01", "lab-node01.png"}} {
		shot := filepath.Join(dir, p.shot)
		dom, err := web.Chromium(ctx, c.NS("master"), APIURL()+p.path, shot, 5*time.Second)
		if err != nil {
			t.Errorf("chromium %s: %v", p.path, err)
			continue
		}
		t.Logf("screenshot of %s: %s", p.path, shot)
		for _, want := range []string{"node01", "up"} {
			if !strings.Contains(dom, want) {
				t.Errorf("page %s: %q not in the rendered page", p.path, want)
			}
		}
		if p.path == "/" && !strings.Contains(dom, "node02") {
			t.Errorf("page /: node02 not in the rendered page")
		}
	}
}

// checkDownAndLost shuts node02 down cleanly and pulls node01's plug:
// the records say down and lost.
func checkDownAndLost(t *testing.T, c *Cluster) {
	n2, _ := c.Node("node02")
	n2.Run("systemctl poweroff", 5*time.Second)
	if err := c.PowerOff("node01"); err != nil {
		t.Fatal(err)
	}
	api := c.API()
	want := map[string]string{"52:54:00:bd:00:01": "lost", "52:54:00:bd:00:02": "down"}
	deadline := time.Now().Add(2 * time.Minute)
	for mac, stage := range want {
		var d web.NodeDetail
		for time.Now().Before(deadline) {
			d, _ = api.Node(context.Background(), mac)
			if string(d.Stage) == stage {
				break
			}
			time.Sleep(time.Second)
		}
		if string(d.Stage) != stage {
			t.Errorf("%s: stage %q, want %q", mac, d.Stage, stage)
		} else {
			t.Logf("%s: %s (%s)", mac, stage, d.Boots[len(d.Boots)-1].Last().Detail)
		}
	}
}

// checkNode logs in on the serial console and checks the node.
func checkNode(t *testing.T, r *NodeReport, dir, image string) {
	root := filepath.Join(dir, "state", "images", image, "1", "root")
	n := &r.Node
	if err := n.Login("root", LabPassword, 2*time.Minute); err != nil {
		con, _ := os.ReadFile(n.Console)
		t.Errorf("%s: %v\n%s", n.Name, err, tail(string(con), 2000))
		return
	}
	run := func(cmd string) string {
		out, err := n.Run(cmd, 60*time.Second)
		if err != nil {
			t.Errorf("%s: %v\n%s", n.Name, err, out)
		}
		return out
	}
	expect := func(what, got, want string) {
		if !strings.Contains(got, want) {
			t.Errorf("%s: %s: got %q, want it to contain %q", n.Name, what, got, want)
		}
	}
	expect("hostname", run("hostname"), r.Hostname)
	// A clean boot: every unit started, none failed. (On Debian 13 dbus
	// failed here while bootd did not answer NFSACL.) The getty may come
	// before the last jobs: --wait lets them finish.
	if out, _ := n.Run("systemctl is-system-running --wait", 90*time.Second); !strings.Contains(out, "running") {
		failed, _ := n.Run("systemctl --failed --no-legend --plain", 30*time.Second)
		t.Errorf("%s: systemctl is-system-running: %q; failed units:\n%s", n.Name, out, failed)
	}
	expect("multi-user", run("systemctl is-active multi-user.target"), "active")
	expect("getty on the serial console", run("systemctl is-active serial-getty@ttyS0.service"), "active")
	expect("root filesystem", run("findmnt -n -o FSTYPE /"), "overlay")
	expect("lower layer", run("findmnt -n -o SOURCE /run/bootd/ro"), MasterIP+":/"+image+"/1")
	expect("lower layer type", run("findmnt -n -o FSTYPE /run/bootd/ro"), "nfs")
	expect("lower layer read-only", run("findmnt -n -o OPTIONS /run/bootd/ro")+",", "ro,")
	expect("upper layer", run("findmnt -n -o FSTYPE /run/bootd/rw"), "tmpfs")
	// A user other than a file's owner runs programs from the NFS lower
	// layer: the overlay's permission check for a non-owner is the path that
	// failed with EOPNOTSUPP on Debian 13.
	expect("a program run as nobody", run("runuser -u nobody -- /usr/bin/id -u"), "65534")
	expect("a shell run as nobody", run("su -s /bin/sh nobody -c 'cat /etc/debian_version >/dev/null && echo ran-as-$(id -un)'"), "ran-as-nobody")
	expect("write to /etc", run("echo written-by-"+n.Name+" > /etc/e2e-written && cat /etc/e2e-written"), "written-by-"+n.Name)
	run("touch /tmp/e2e && rm /tmp/e2e")
	// What the init handed over: the node's address (bootd's record has
	// it, from its own servers) on the boot NIC, which lease.json names.
	// The serial capture now and then doubles a character, so the file
	// is checked on the node and only a word comes back.
	for _, field := range []string{`"mac": "` + r.MAC, `"address": "` + r.IP + "/", `"export": "/` + image + `/1"`} {
		expect("lease.json has "+field, run("grep -qF '"+field+"' /run/bootd/lease.json && echo has-field"), "has-field")
	}
	// The boot NIC by its MAC: lease.json names it as the init saw it
	// (eth0), and Debian 13's udev renames it to its predictable name.
	expect("boot NIC address", run("for i in /sys/class/net/*; do [ \"$(cat $i/address)\" = "+r.MAC+
		" ] && ip -color=never -4 -o addr show dev ${i##*/}; done; true"), r.IP+"/")
	// SSH host keys are the node's own, made at boot in its RAM layer by
	// bootd-ssh-hostkeys.service: the image (the export) carries none.
	expect("ssh host keys made at boot", run("test -s /etc/ssh/ssh_host_ed25519_key && test -s /etc/ssh/ssh_host_ecdsa_key && echo host-keys-made"), "host-keys-made")
	expect("host key unit", run("systemctl is-active bootd-ssh-hostkeys.service"), "active")
	// is-active exits non-zero (and run reports it) unless sshd runs.
	expect("sshd", run("systemctl is-active ssh.service"), "active")
	if keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("%s: SSH host keys in the image, readable on the export: %v", n.Name, keys)
	}
	// No DNS on the lab network: the node's own name resolves from
	// /etc/hosts (bootd-init's 127.0.1.1 line), so nothing waits on a
	// resolver; and a read-only image is up to date (no ldconfig per boot).
	expect("own name without DNS", run("getent hosts $(hostname)"), "127.0.1.1")
	expect("ldconfig not run at boot", run("systemctl show -p ConditionResult --value ldconfig.service"), "no")
	expect("dpkg on the read-only lower", run("dpkg-query -W -f='${Status}' openssh-server"), "install ok installed")
	expect("apt on the read-only lower", run("apt-cache policy openssh-server | head -3"), "Installed:")
	run("logger -t bootd-e2e hello-from-" + n.Name)
	// The write stayed in the node's RAM layer.
	if _, err := os.Stat(filepath.Join(root, "etc/e2e-written")); err == nil {
		t.Errorf("%s: a write to /etc reached the export", n.Name)
	}
	// Syslog arrives at the master.
	ip := r.IP
	logFile := filepath.Join(dir, "state", "logs", ip+".log")
	var got string
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile(logFile)
		if got = string(b); strings.Contains(got, "hello-from-"+n.Name) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(got, "hello-from-"+n.Name) {
		t.Errorf("%s: its syslog did not reach the master (%s):\n%s", n.Name, logFile, tail(got, 1000))
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitUp follows the nodes' boots, logs the table, and fails the test
// unless every node reached multi-user.
func waitUp(t *testing.T, c *Cluster) {
	t.Helper()
	c.Wait(context.Background())
	var table strings.Builder
	c.Table(&table)
	t.Logf("\n%s", table.String())
	for _, r := range c.Reports {
		if r.Result != "ok" {
			con, _ := os.ReadFile(r.Console)
			t.Fatalf("%s did not reach multi-user: %s\nconsole tail:\n%s", r.Name, r.Result, tail(string(con), 4000))
		}
	}
}

// labBootd checks that a lab can run here and builds the bootd it runs.
func labBootd(t *testing.T) string {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	bootd := filepath.Join(t.TempDir(), "bootd")
	if err := BuildBootd("..", bootd); err != nil {
		t.Fatal(err)
	}
	return bootd
}

// labDir is a lab's directory for one test, its downloaded packages kept
// between runs where the machine keeps /var/cache.
func labDir(t *testing.T) string {
	dir := fastTempDirLab(t)
	cache := "/var/cache/bootd-lab/debs"
	os.MkdirAll(cache, 0o755)
	os.MkdirAll(filepath.Join(dir, "state", "cache"), 0o755)
	os.Symlink(cache, filepath.Join(dir, "state", "cache", "debs"))
	return dir
}

// fastTempDirLab is a temporary directory on disk (the image is large;
// /dev/shm is RAM), removed at the end.
func fastTempDirLab(t *testing.T) string {
	d, err := os.MkdirTemp("/var/tmp", "bootd-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("rm", "-rf", d).Run() })
	return d
}

// checkOnlineUpdate: with both nodes reading the whole of /usr/bin in a
// loop, the image is updated (a package installed, generation 2
// published) and bootd is killed and restarted. The nodes see no error
// and stay on generation 1; a reset node comes up on generation 2 with
// the package; generation 1 cannot be removed while node02 runs it.
func checkOnlineUpdate(t *testing.T, c *Cluster, image string) {
	// In a subshell: Run appends "; echo ..." and "&;" is no command.
	const load = `(nohup sh -c 'while :; do echo 3 >/proc/sys/vm/drop_caches; find /usr/bin /usr/sbin -type f -print0 | xargs -0 sha256sum >/dev/null 2>>/run/load.err || echo pass failed >>/run/load.err; echo . >>/run/load.passes; done' >/dev/null 2>&1 &)`
	nodes := map[string]*Node{}
	for _, r := range c.Reports {
		n := &r.Node
		nodes[n.Name] = n
		if _, err := n.Run(load, 30*time.Second); err != nil {
			t.Fatalf("%s: starting the load: %v", n.Name, err)
		}
	}
	passes := func(n *Node) int {
		out, _ := n.Run("cat /run/load.passes 2>/dev/null | wc -l", 30*time.Second)
		var k int
		fmt.Sscan(out, &k)
		return k
	}
	time.Sleep(10 * time.Second)
	start := time.Now()
	out, err := exec.Command(c.Opt.Bootd, "image", "update", image, "--install", "hello", "--config", c.Config).CombinedOutput()
	if err != nil {
		t.Fatalf("image update: %v\n%s", err, tail(string(out), 3000))
	}
	t.Logf("image update --install hello: %v\n%s", time.Since(start).Round(100*time.Millisecond), tail(string(out), 400))
	before := map[string]int{}
	for name, n := range nodes {
		before[name] = passes(n)
	}
	killed := time.Now()
	if err := c.RestartMaster(syscall.SIGKILL); err != nil {
		t.Fatalf("restarting bootd: %v", err)
	}
	for range 100 {
		if _, err := c.API().Nodes(context.Background()); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("bootd killed and back in %v", time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(30 * time.Second)
	for name, n := range nodes {
		errs, _ := n.Run("cat /run/load.err 2>/dev/null; dmesg | grep -iE 'stale file handle|input/output error' || true", 60*time.Second)
		after := passes(n)
		t.Logf("%s: load passes %d before the restart, %d 30 s after", name, before[name], after)
		if strings.TrimSpace(errs) != "" {
			t.Errorf("%s: errors under the update and restart:\n%s", name, errs)
		}
		if after <= before[name] {
			t.Errorf("%s: the load made no progress after bootd's restart (%d passes, %d before)", name, after, before[name])
		}
		if out, err := n.Run("command -v hello || echo absent", 30*time.Second); err != nil || !strings.Contains(out, "absent") {
			t.Errorf("%s: a running node sees the new generation's package: %q", name, out)
		}
		if out, _ := n.Run("findmnt -n -o SOURCE /run/bootd/ro", 30*time.Second); !strings.HasSuffix(strings.TrimSpace(out), ":/"+image+"/1") {
			t.Errorf("%s: root is %q, want generation 1", name, out)
		}
	}
	// node01 is reset; it boots generation 2.
	reset := time.Now()
	if err := c.Reset("node01"); err != nil {
		t.Fatal(err)
	}
	waitGeneration(t, c, "node01", "52:54:00:bd:00:01", reset, 2)
	n1 := nodes["node01"]
	if err := n1.Login("root", LabPassword, 3*time.Minute); err != nil {
		t.Fatalf("node01 after the reset: %v", err)
	}
	if out, err := n1.Run("hello", 30*time.Second); err != nil || !strings.Contains(out, "Hello, world!") {
		t.Errorf("node01 on generation 2: hello: %q %v", out, err)
	}
	n2 := nodes["node02"]
	if errs, _ := n2.Run("cat /run/load.err 2>/dev/null", 30*time.Second); strings.TrimSpace(errs) != "" {
		t.Errorf("node02: errors while node01 rebooted: %s", errs)
	}
	out, err = exec.Command(c.Opt.Bootd, "image", "rm", image, "1", "--config", c.Config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "node02") {
		t.Errorf("image rm of the generation node02 runs: %v\n%s", err, out)
	}
	// Rolled back, node01's next boot is on generation 1 again.
	if out, err := exec.Command(c.Opt.Bootd, "image", "rollback", image, "--config", c.Config).CombinedOutput(); err != nil {
		t.Fatalf("image rollback: %v\n%s", err, out)
	}
	reset = time.Now()
	if err := c.Reset("node01"); err != nil {
		t.Fatal(err)
	}
	waitGeneration(t, c, "node01", "52:54:00:bd:00:01", reset, 1)
	if err := n1.Login("root", LabPassword, 3*time.Minute); err != nil {
		t.Fatalf("node01 after the rollback: %v", err)
	}
	if out, _ := n1.Run("command -v hello || echo absent", 30*time.Second); !strings.Contains(out, "absent") {
		t.Errorf("node01 rolled back to generation 1 still has hello: %q", out)
	}
}

// waitGeneration waits for a node reset at reset to come up, and checks
// the generation it booted.
func waitGeneration(t *testing.T, c *Cluster, name, mac string, reset time.Time, gen int) {
	t.Helper()
	var d web.NodeDetail
	for time.Since(reset) < 5*time.Minute {
		d, _ = c.API().Node(context.Background(), mac)
		if b := d.Boots; len(b) > 0 && b[len(b)-1].Start.After(reset) && d.Stage == "up" {
			break
		}
		time.Sleep(time.Second)
	}
	if d.Stage != "up" || d.Generation != gen {
		t.Fatalf("%s after a reset: stage %s, generation %d; want up on %d", name, d.Stage, d.Generation, gen)
	}
	t.Logf("%s: reset to up on generation %d in %v", name, gen, time.Since(reset).Round(100*time.Millisecond))
}

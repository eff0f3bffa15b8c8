package packaging

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/image"
)

// rootCache keeps the Debian 12 root tarballs between runs: making one
// (mmdebstrap, and downloading the package's dependencies into its apt
// cache) takes minutes; unpacking a fresh copy for each run, seconds.
const rootCache = "/var/cache/bootd-pkgtest"

// TestDebianPackage builds the .deb with scripts/package.sh and checks, in
// a fresh Debian 12 root, what an admin relies on: `apt-get install
// ./bootd_*.deb` pulls what bootd needs, the files are in place and the
// config is a conffile, systemd accepts the unit, bootd runs, and removing
// then purging the package leaves nothing behind.
func TestDebianPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the .deb and installs it into a Debian 12 root made with mmdebstrap")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mmdebstrap, chroot and mounts")
	}
	for _, tool := range []string{"mmdebstrap", "dpkg-deb", "lintian", "systemd-nspawn", "unshare", "chroot", "tar", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/deps.sh installs it)", tool, err)
		}
	}
	start := time.Now()
	commit, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	deb := buildDeb(t)
	fields := debFields(t, deb)
	t.Logf("built %s (%s) in %s", filepath.Base(deb), fields["Installed-Size"]+" KiB installed", time.Since(start).Round(time.Second))
	checkStatic(t, deb)
	// Debian's own checker, beside the rest (it takes ~20 s). The default
	// maintainer address is a placeholder for the site's (MAINTAINER).
	lint := exec.Command("lintian", "--fail-on", "error,warning",
		"--suppress-tags", "bogus-mail-host,bogus-mail-host-in-debian-changelog", deb)
	var lintOut bytes.Buffer
	lint.Stdout, lint.Stderr = &lintOut, &lintOut
	if err := lint.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lint.Wait(); err != nil {
			t.Errorf("lintian: %v\n%s", err, lintOut.String())
		}
	}()

	root := freshRoot(t, fields)
	if err := copyFile(deb, filepath.Join(root, "tmp", filepath.Base(deb))); err != nil {
		t.Fatal(err)
	}
	step := time.Now()
	mustRun(t, root, "apt-get install -y /tmp/"+filepath.Base(deb))
	t.Logf("apt-get install: %s", time.Since(step).Round(time.Second))

	checkFiles(t, root)
	checkUnit(t, root)
	checkCommands(t, root, fields["Version"], strings.TrimSpace(string(commit)))
	checkUpgrade(t, root, deb)
	checkService(t, root)
	checkRemove(t, root)
	t.Logf("whole test: %s", time.Since(start).Round(time.Second))
}

// packageFiles are the package's files an admin and systemd look for, and
// their modes.
var packageFiles = map[string]os.FileMode{
	"/usr/sbin/bootd":                              0o755,
	"/lib/systemd/system/bootd.service":            0o644,
	"/etc/bootd/bootd.yaml":                        0o644,
	"/usr/share/man/man8/bootd.8.gz":               0o644,
	"/usr/share/bash-completion/completions/bootd": 0o644,
	"/usr/share/doc/bootd/copyright":               0o644,
	"/usr/share/doc/bootd/README.md.gz":            0o644,
}

// checkFiles: the files are installed, dpkg knows them, and the config is
// a conffile.
func checkFiles(t *testing.T, root string) {
	t.Helper()
	listed := map[string]bool{}
	for _, p := range strings.Fields(mustRun(t, root, "dpkg -L bootd")) {
		listed[p] = true
	}
	for p, mode := range packageFiles {
		if !listed[p] {
			t.Errorf("dpkg -L bootd does not list %s", p)
		}
		st, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("installed: %v", err)
			continue
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want a regular file %v", p, st.Mode(), mode)
		}
	}

	// The config is a conffile, registered with the shipped file's sum,
	// so that dpkg keeps the admin's edits on upgrade and on remove.
	example, err := os.ReadFile("../config/bootd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(example)
	conffiles := strings.Fields(mustRun(t, root, "dpkg-query -W -f='${Conffiles}' bootd"))
	if len(conffiles) != 2 || conffiles[0] != "/etc/bootd/bootd.yaml" || conffiles[1] != hex.EncodeToString(sum[:]) {
		t.Errorf("conffiles: %q, want /etc/bootd/bootd.yaml %x", conffiles, sum)
	}
}

// checkUnit: systemd accepts the unit and rates its sandbox.
func checkUnit(t *testing.T, root string) {
	t.Helper()
	// systemd-analyze verify exits 0 on many faults (an unknown key, a bad
	// value: "ignoring"), so a unit passes only if it says nothing at all.
	// Two broken copies show the check can fail.
	if out, err := run(root, "systemd-analyze verify /lib/systemd/system/bootd.service"); err != nil || out != "" {
		t.Errorf("systemd-analyze verify bootd.service: %v\n%s", err, out)
	}
	for _, broken := range []string{"s/^ProtectSystem=/ProtectSytem=/", "s/^Restart=on-failure/Restart=sometimes/"} {
		script := "mkdir -p /tmp/broken && sed '" + broken + "' /lib/systemd/system/bootd.service >/tmp/broken/bootd.service && systemd-analyze verify /tmp/broken/bootd.service"
		if out, err := run(root, script); err == nil && out == "" {
			t.Errorf("systemd-analyze verify passed a unit broken with %s", broken)
		}
	}
	// The sandbox, scored by systemd itself (0 best, 10 worst): bootd runs
	// as root, so this is what keeps the score down.
	if out, err := run(root, "systemd-analyze security --offline=true --threshold=30 /lib/systemd/system/bootd.service"); err != nil {
		t.Errorf("systemd-analyze security: above 3.0 (%v):\n%s", err, out)
	} else if m := regexp.MustCompile(`Overall exposure level for bootd.service: ([0-9.]+)`).FindStringSubmatch(out); m != nil {
		t.Logf("systemd-analyze security: exposure %s", m[1])
	}
}

// checkCommands: the installed bootd, its man page and its completion
// work; its version is the package's and the build's commit.
func checkCommands(t *testing.T, root, version, commit string) {
	t.Helper()
	got := strings.TrimSpace(mustRun(t, root, "bootd --version"))
	wantVersion := fmt.Sprintf("bootd %s (commit %s, go", version, commit)
	if !strings.HasPrefix(got, wantVersion) {
		t.Errorf("bootd --version: %q, want it to start %q", got, wantVersion)
	}
	mustRun(t, root, "bootd config check --config /etc/bootd/bootd.yaml")
	if got := strings.TrimSpace(mustRun(t, root, "man -w bootd")); got != "/usr/share/man/man8/bootd.8.gz" {
		t.Errorf("man -w bootd: %q", got)
	}
	if page := mustRun(t, root, "MANWIDTH=80 man -P cat bootd 2>&1"); !strings.Contains(page, "bootd") {
		t.Errorf("man bootd renders no page:\n%s", page)
	}
	if got := mustRun(t, root, "bash -c '. /usr/share/bash-completion/completions/bootd && complete -p bootd'"); !strings.HasSuffix(strings.TrimSpace(got), " bootd") {
		t.Errorf("the bash completion registers no completion for bootd: %q", got)
	}
}

// checkUpgrade: installing the package again keeps the admin's edit of
// the conffile. It leaves bootd.service enabled, for checkRemove.
func checkUpgrade(t *testing.T, root, deb string) {
	t.Helper()
	mustRun(t, root, "echo '# edited by the admin' >>/etc/bootd/bootd.yaml && systemctl enable bootd.service")
	mustRun(t, root, "dpkg -i /tmp/"+filepath.Base(deb))
	if b, err := os.ReadFile(filepath.Join(root, "etc/bootd/bootd.yaml")); err != nil || !bytes.HasSuffix(b, []byte("# edited by the admin\n")) {
		t.Errorf("reinstalling lost the admin's edit of bootd.yaml (%v)", err)
	}
}

// checkRemove: remove keeps the conffile; purge leaves nothing with bootd
// in its name (the link `systemctl enable` made included) but the state
// directory the service made, which holds the image store.
func checkRemove(t *testing.T, root string) {
	t.Helper()
	mustRun(t, root, "dpkg -r bootd")
	for p := range packageFiles {
		_, err := os.Lstat(filepath.Join(root, p))
		if kept := err == nil; kept != (p == "/etc/bootd/bootd.yaml") {
			t.Errorf("after dpkg -r: %s kept: %v", p, kept)
		}
	}
	mustRun(t, root, "dpkg -P bootd")
	// /var/cache/man is man-db's cache of formatted pages (systemd-analyze
	// verify formats bootd(8) to check Documentation=), not the package's:
	// man-db's daily mandb drops the pages of removed packages.
	if left := strings.TrimSpace(mustRun(t, root, "find / -xdev -name '*bootd*' -not -path '/tmp/*' -not -path '/var/cache/man/*'")); left != "/var/lib/bootd" {
		t.Errorf("after dpkg -P, left behind (want /var/lib/bootd only):\n%s", left)
	}
	// dpkg either forgot the package or knows it as not installed.
	if status, err := run(root, "dpkg-query -W -f='${db:Status-Status}' bootd"); err == nil && status != "not-installed" {
		t.Errorf("after dpkg -P, dpkg says bootd is %q", status)
	}
}

// buildDeb runs scripts/package.sh into a temporary directory.
func buildDeb(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("bash", "scripts/package.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "DIST="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	deb := lines[len(lines)-1]
	if !regexp.MustCompile(`/bootd_[^_/]+_amd64\.deb$`).MatchString(deb) {
		t.Fatalf("scripts/package.sh printed %q, want the path of bootd_VERSION_amd64.deb", deb)
	}
	return deb
}

// debFields reads the package's control fields.
func debFields(t *testing.T, deb string) map[string]string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s: %v", deb, err)
	}
	fields := map[string]string{}
	var last string
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k], last = v, k
		} else if strings.HasPrefix(line, " ") && last != "" {
			fields[last] += "\n" + line
		}
	}
	for _, k := range []string{"Package", "Version", "Architecture", "Depends"} {
		if fields[k] == "" {
			t.Fatalf("the package has no %s field:\n%s", k, out)
		}
	}
	if fields["Package"] != "bootd" || fields["Architecture"] != "amd64" {
		t.Fatalf("package %s for %s, want bootd for amd64", fields["Package"], fields["Architecture"])
	}
	return fields
}

// checkStatic: the packaged bootd has no ELF interpreter, so it runs on
// any master and in the initrd, where it is /init.
func checkStatic(t *testing.T, deb string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	f, err := elf.Open(filepath.Join(dir, "usr/sbin/bootd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("/usr/sbin/bootd is dynamically linked")
		}
	}
}

// freshRoot unpacks a Debian 12 root (systemd and man-db added, for the
// unit check and man) into a temporary directory. The tarball is made once
// per month and set of dependencies, with those dependencies downloaded
// into its apt cache: installing the package then needs no network.
func freshRoot(t *testing.T, fields map[string]string) string {
	t.Helper()
	var deps []string
	for _, f := range []string{"Depends", "Recommends"} {
		deps = append(deps, firstAlternatives(fields[f])...)
	}
	const include = "systemd,man-db"
	key := sha256.Sum256([]byte(strings.Join([]string{"bookworm", image.DefaultMirror, include, strings.Join(deps, " "), time.Now().Format("2006-01")}, "\n")))
	tarball := filepath.Join(rootCache, "bookworm-"+hex.EncodeToString(key[:6])+".tar")
	if _, err := os.Stat(tarball); err != nil {
		if err := os.MkdirAll(rootCache, 0o755); err != nil {
			t.Fatal(err)
		}
		step := time.Now()
		// mmdebstrap writes a tarball only to a name ending in .tar.
		tmp := strings.TrimSuffix(tarball, ".tar") + ".partial.tar"
		os.RemoveAll(tmp)
		cmd := exec.Command("mmdebstrap", "--variant=apt", "--include="+include,
			"--skip=cleanup/apt/lists", "--skip=cleanup/apt/cache",
			`--customize-hook=chroot "$1" apt-get install --download-only -y `+strings.Join(deps, " "),
			"bookworm", tmp, image.DefaultMirror)
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			t.Fatalf("mmdebstrap: %v\n%s", err, tail(out, 40))
		}
		if err := os.Rename(tmp, tarball); err != nil {
			t.Fatal(err)
		}
		t.Logf("made the Debian 12 root %s in %s", tarball, time.Since(step).Round(time.Second))
	}
	root := t.TempDir()
	if out, err := exec.Command("tar", "--numeric-owner", "-xpf", tarball, "-C", root).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarball, err, out)
	}
	return root
}

// firstAlternatives turns a Depends-style field into package names, the
// first of each set of alternatives, which is the one apt picks.
func firstAlternatives(field string) []string {
	var names []string
	for _, dep := range strings.Split(field, ",") {
		first, _, _ := strings.Cut(dep, "|")
		name, _, _ := strings.Cut(strings.TrimSpace(first), " ")
		if name != "" {
			names = append(names, name)
		}
	}
	return names
}

// run runs a shell script chrooted into root, with /proc, /sys and /dev
// mounted in a mount namespace of its own: they vanish with it, so the
// root's temporary directory is removed without touching the host's.
func run(root, script string) (string, error) {
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" && mount --rbind /dev "$1/dev" && exec chroot "$1" /bin/sh -ec "$2"`,
		"sh", root, script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, root, script string) string {
	t.Helper()
	out, err := run(root, script)
	if err != nil {
		t.Fatalf("in the Debian 12 root: %s: %v\n%s", script, err, tail([]byte(out), 40))
	}
	return out
}

func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"... " + strconv.Itoa(len(lines)-n) + " lines before"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// liveConfig is what the booted root's bootd serves: every listener on, on
// the container's loopback (its only interface), the privileged ports
// among them.
const liveConfig = `interface: lo
nfs:
  allow: ["127.0.0.0/8"]
syslog:
  listen: "0.0.0.0:514"
  allow: ["127.0.0.0/8"]
`

// The ports liveConfig opens: DHCP, PXE, TFTP, syslog, netconsole over
// UDP; NFS, syslog and HTTP over TCP.
var liveUDP, liveTCP = []int{67, 4011, 69, 514, 6666}, []int{2049, 514, 8080}

// checkScript runs in the booted root once it is up, writes what it finds
// to /root/check.out, section by section, and powers the container off.
// Waiting for the API is waiting for serve to have opened its listeners.
const checkScript = `#!/bin/sh
exec >/root/check.out 2>&1
api() {
	for i in $(seq 60); do bootd nodes list --json --config /etc/bootd/bootd.yaml >/dev/null 2>&1 && echo up && return; sleep 1; done
	echo down
}
echo "== api"; api
echo "== show"; systemctl show -p ActiveState -p MainPID -p NRestarts bootd
echo "== capeff"; sed -n 's/^CapEff:[[:space:]]*//p' /proc/$(systemctl show -p MainPID --value bootd)/status
echo "== net"; cat /proc/net/udp /proc/net/udp6 /proc/net/tcp /proc/net/tcp6
echo "== raw"; tail -n +2 /proc/net/raw
echo "== reload"; systemctl reload bootd && echo ok
echo "== api after reload"; api
echo "== show after reload"; systemctl show -p ActiveState -p MainPID -p NRestarts bootd
systemctl poweroff
`

// checkService boots the root (systemd-nspawn, a private network) with
// bootd.service enabled and the shipped unit untouched, and checks what
// the sandbox must allow and what it must not: serve starts and opens its
// privileged ports and its raw ICMP socket (liveness probes), it runs with
// exactly the unit's capabilities, and a reload keeps the same process.
func checkService(t *testing.T, root string) {
	t.Helper()
	step := time.Now()
	files := map[string]string{
		"etc/bootd/bootd.yaml":                liveConfig,
		"root/check.sh":                       checkScript,
		"etc/systemd/system/pkgcheck.service": "[Unit]\nAfter=bootd.service\n[Service]\nType=oneshot\nExecStart=/bin/sh /root/check.sh\n",
		"etc/systemd/system/multi-user.target.wants/pkgcheck.service": "",
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		var err error
		if text == "" {
			err = os.Symlink("/etc/systemd/system/pkgcheck.service", p)
		} else {
			err = os.WriteFile(p, []byte(text), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// --register=no --keep-unit: no systemd-machined or bus needed on the
	// machine running the test. timeout: a container that never powers
	// off fails the test instead of hanging it.
	const machine = "bootd-pkgtest"
	boot := exec.Command("timeout", "300", "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
		"--machine="+machine, "--directory="+root, "--boot", "--private-network")
	out, err := boot.CombinedOutput()
	os.Remove(filepath.Join("/run/systemd/nspawn/propagate", machine))
	result, rerr := os.ReadFile(filepath.Join(root, "root/check.out"))
	if rerr != nil {
		t.Fatalf("systemd-nspawn --boot: %v, and no check result (%v)\n%s", err, rerr, tail(out, 40))
	}
	for name := range files {
		if strings.Contains(name, "pkgcheck") || strings.HasPrefix(name, "root/") {
			os.Remove(filepath.Join(root, name))
		}
	}
	sec := sections(string(result))
	t.Logf("bootd.service in a booted root: %s", time.Since(step).Round(time.Second))

	if sec["api"] != "up" || sec["api after reload"] != "up" {
		t.Errorf("bootd's API under the unit: %q, after reload %q\n%s", sec["api"], sec["api after reload"], result)
	}
	before, after := props(sec["show"]), props(sec["show after reload"])
	if before["ActiveState"] != "active" || before["NRestarts"] != "0" || before["MainPID"] == "0" {
		t.Errorf("bootd.service: %v", before)
	}
	if sec["reload"] != "ok" || after["MainPID"] != before["MainPID"] || after["NRestarts"] != "0" || after["ActiveState"] != "active" {
		t.Errorf("systemctl reload bootd: %q; before %v, after %v", sec["reload"], before, after)
	}

	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/bootd.service"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := capMask(string(unit))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := strconv.ParseUint(sec["capeff"], 16, 64); err != nil || got != want {
		t.Errorf("bootd runs with capabilities %s, want %016x (the unit's CapabilityBoundingSet)", sec["capeff"], want)
	}

	udp, tcp := listening(sec["net"])
	for _, p := range liveUDP {
		if !udp[p] {
			t.Errorf("bootd.service: nothing bound to UDP port %d", p)
		}
	}
	for _, p := range liveTCP {
		if !tcp[p] {
			t.Errorf("bootd.service: nothing listening on TCP port %d", p)
		}
	}
	if sec["raw"] == "" {
		t.Errorf("bootd.service: no raw socket: the liveness probes send no ICMP")
	}
	// systemd makes /var/lib/bootd; bootd makes run/ in it at start (node
	// records, stats): the one place ProtectSystem=strict leaves writable.
	if st, err := os.Stat(filepath.Join(root, "var/lib/bootd/run")); err != nil || !st.IsDir() {
		t.Errorf("bootd.service wrote nothing in its StateDirectory: %v", err)
	}
}

// sections splits the check's output at its "== NAME" lines.
func sections(out string) map[string]string {
	sec := map[string]string{}
	var name string
	var body []string
	flush := func() {
		if name != "" {
			sec[name] = strings.TrimSpace(strings.Join(body, "\n"))
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if n, ok := strings.CutPrefix(line, "== "); ok {
			flush()
			name, body = n, nil
			continue
		}
		body = append(body, line)
	}
	flush()
	return sec
}

// props reads `systemctl show` output.
func props(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// capMask is the capability mask the unit's CapabilityBoundingSet names.
func capMask(unit string) (uint64, error) {
	numbers := map[string]int{"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_RAW": unix.CAP_NET_RAW,
		"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH}
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			var mask uint64
			for _, name := range strings.Fields(v) {
				n, known := numbers[name]
				if !known {
					return 0, fmt.Errorf("CapabilityBoundingSet names %s: add it to the test's table", name)
				}
				mask |= 1 << n
			}
			return mask, nil
		}
	}
	return 0, fmt.Errorf("the unit has no CapabilityBoundingSet")
}

// listening reads /proc/net/{udp,udp6,tcp,tcp6}: the UDP ports bound and
// the TCP ports listened on.
func listening(table string) (udp, tcp map[int]bool) {
	udp, tcp = map[int]bool{}, map[int]bool{}
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] == "sl" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if !ok || err != nil {
			continue
		}
		switch f[3] {
		case "07": // UDP sockets sit in TCP_CLOSE
			udp[int(port)] = true
		case "0A": // TCP_LISTEN
			tcp[int(port)] = true
		}
	}
	return udp, tcp
}

package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/imageroot"
)

// Settings are the site's choices for prepared images (config key
// "image").
type Settings struct {
	// RootPasswordHash is a crypt(3) hash for root ("" leaves root locked).
	RootPasswordHash string `yaml:"root_password_hash"`
	// AuthorizedKeys go into /root/.ssh/authorized_keys.
	AuthorizedKeys []string `yaml:"authorized_keys"`
	// Syslog says where nodes send their logs: "" is bootd's syslog
	// receiver when it listens (the node learns it from bootd.log at
	// boot), "none" disables forwarding, anything else is HOST or
	// HOST:PORT.
	Syslog string `yaml:"syslog"`
	// Mounts are site filesystems: /home from the site's NFS server,
	// local scratch disks. Heavy writes belong there, not in RAM.
	Mounts []Mount `yaml:"mounts"`
	// NIS joins a NIS domain when set.
	NIS *NIS `yaml:"nis"`
	// Include lists packages every image gets besides bootd's own.
	Include []string `yaml:"include"`
	// Mirror is the Debian mirror (default http://deb.debian.org/debian).
	Mirror string `yaml:"mirror"`
}

// Mount is one /etc/fstab line.
type Mount struct {
	Source  string `yaml:"source"`
	Target  string `yaml:"target"`
	Type    string `yaml:"type"`
	Options string `yaml:"options"`
}

// NIS is a NIS client setup.
type NIS struct {
	Domain string `yaml:"domain"`
	Server string `yaml:"server"`
}

// Packages are what bootd puts in every image besides minbase: the init
// system, the kernel, and what a cluster node is expected to have.
var Packages = []string{
	"systemd-sysv", "udev", "kmod", "linux-image-amd64", "iproute2", "iputils-ping",
	"openssh-server", "rsyslog", "procps", "less", "ca-certificates", "dbus", "nfs-common",
}

// Step is one documented preparation step.
type Step struct {
	Name string
	Why  string
	Do   func(root string, s Settings) error
}

// Steps prepare a freshly bootstrapped root for diskless life. Each is
// safe to read on its own; `bootd image build` runs them in order and
// records them in /etc/bootd-image.json.
var Steps = []Step{
	{"hostname", "The hostname comes from the kernel command line (bootd-init sets it, writes /etc/hostname into the RAM layer and gives it 127.0.1.1 in /etc/hosts); the image carries none, /etc/hosts only localhost, and no /etc/resolv.conf of the build host's (bootd-init writes the nodes' from DHCP or the firmware's; a node asking a resolver that is not there waits seconds on every name).", stepHostname},
	{"machine-id", "An empty /etc/machine-id makes systemd generate one per boot: nodes sharing an image must not share an identity.", stepMachineID},
	{"boot-nic", "The booted system must never reconfigure or down the boot NIC (the root filesystem is on it): ifupdown gets no entry for it, and systemd-networkd and NetworkManager are told at boot, by files bootd-init writes under /run, to leave it unmanaged.", stepBootNIC},
	{"consoles", "A getty on the serial console (ttyS0) and on the VGA console (tty1).", stepConsoles},
	{"root-access", "root's password hash and authorized_keys from the config.", stepRootAccess},
	{"logs", "The journal stays in RAM (volatile, capped) and rsyslog forwards everything over TCP to bootd's syslog receiver (the rule bootd-init writes at boot from bootd.log, empty when bootd receives no logs) or to image.syslog.", stepLogs},
	{"fstab", "No root entry (bootd-init mounts it); site mounts from the config, because heavy writes must not fill the RAM layer.", stepFstab},
	{"services", "Services that make no sense on a shared read-only root are disabled: apt timers, fstrim, e2scrub, man-db; and the systemd generators that look for what a diskless node has not (local root and swap partitions, hibernation, TPM, offline updates, a VM's vsock). The image carries no SSH host keys (shared ones would let any node's root impersonate every node, and the export is readable by whoever speaks NFS as root): " + hostKeyUnit + " makes ed25519 and ecdsa keys at boot, in the node's RAM layer, early (beside sysinit, not after basic.target) and before sshd starts, and sshd is told to offer those two (RSA takes seconds to make under emulation). A site wanting stable keys puts them in the image with a hook (they are kept; but then every node of the image shares them, on the export).", stepServices},
	{"report", "So that the master sees every node come up and go down, " + reportUnit + " tells bootd's HTTP server (bootd.report) the node reached multi-user, and, when stopped at shutdown, that it is going down: one POST each, with bash's /dev/tcp (images need no curl), given at most 5 seconds so that a dead master never delays a boot or a shutdown, and never failing the unit. It runs only when bootd-init wrote " + boot.ReportEnv + ".", stepReport},
	{"nis", "Optional NIS client: domain and server from the config.", stepNIS},
	{"updated", "/etc/.updated and /var/.updated carry /usr's time, as systemd-update-done leaves them after a first boot: otherwise every boot of a root that never keeps its writes runs ldconfig, the journal catalog update and update-done again (5 s before sysinit.target under emulation).", stepUpdated},
}

// The steps run as root on the master over a tree that packages filled.
// Every path they touch is resolved inside the tree, as the node will
// resolve it: the tree is /, so an absolute symlink in the image (or a
// relative one climbing past its top) points into the image. Otherwise a
// link such as etc/shadow -> /etc/shadow, or etc/ssh -> /etc/ssh, would
// make a step rewrite the master's own files. The kernel resolves
// (openat2 with RESOLVE_IN_ROOT), and the last component of what a step
// replaces or removes is only ever touched with *at calls that do not
// follow it.

// inImage splits a step's name for a file into the directory that holds
// it and its last component.
func inImage(name string) (dir, base string, err error) {
	p := path.Clean("/" + name)
	if p == "/" {
		return "", "", fmt.Errorf("%q names no file in the image", name)
	}
	return path.Dir(p), path.Base(p), nil
}

// openParent opens the directory holding name, resolved inside root and
// made first if mkdir is set.
func openParent(root, name string, mkdir bool) (*os.File, string, error) {
	dir, base, err := inImage(name)
	if err != nil {
		return nil, "", err
	}
	r, err := imageroot.Open(root)
	if err != nil {
		return nil, "", err
	}
	defer r.Close()
	var d *os.File
	if mkdir {
		d, err = r.MkdirAll(dir, 0o755)
	} else {
		d, err = r.OpenIn(dir, unix.O_PATH|unix.O_DIRECTORY)
	}
	if err != nil {
		return nil, "", err
	}
	return d, base, nil
}

// write replaces the content of a regular file in the image. A symlink
// where the file goes is replaced by the file, never written through.
func write(root, name, content string, mode os.FileMode) error {
	if err := writeInRoot(root, name, content, mode); err != nil {
		return fmt.Errorf("writing /%s in the image: %w", strings.TrimPrefix(name, "/"), err)
	}
	return nil
}

func writeInRoot(root, name, content string, mode os.FileMode) error {
	d, base, err := openParent(root, name, true)
	if err != nil {
		return err
	}
	defer d.Close()
	// O_NONBLOCK: a FIFO planted where the file goes must not hang the
	// build; the file is checked to be a regular one before it is used.
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(int(d.Fd()), base, flags, uint32(mode.Perm()))
	if errors.Is(err, unix.ELOOP) {
		if err = unix.Unlinkat(int(d.Fd()), base, 0); err == nil {
			fd, err = unix.Openat(int(d.Fd()), base, flags, uint32(mode.Perm()))
		}
	}
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return fmt.Errorf("not a regular file (mode %#o)", st.Mode)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	// In place, so that the file keeps its owner and group (root:shadow
	// for /etc/shadow).
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readImage returns a regular file's content, the path resolved inside root.
func readImage(root, name string) ([]byte, error) {
	b, err := readInRoot(root, name)
	if err != nil {
		return nil, fmt.Errorf("reading /%s in the image: %w", strings.TrimPrefix(name, "/"), err)
	}
	return b, nil
}

func readInRoot(root, name string) ([]byte, error) {
	r, err := imageroot.Open(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// exists says whether name is in the image, resolved inside root.
func exists(root, name string) bool {
	r, err := imageroot.Open(root)
	if err != nil {
		return false
	}
	defer r.Close()
	h, err := r.OpenIn(name, unix.O_PATH)
	if err != nil {
		return false
	}
	h.Close()
	return true
}

// isSymlink says whether name is a symlink in the image (not followed).
func isSymlink(root, name string) bool {
	d, base, err := openParent(root, name, false)
	if err != nil {
		return false
	}
	defer d.Close()
	var st unix.Stat_t
	return unix.Fstatat(int(d.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// remove deletes a file or symlink (not what it points to) from the
// image; one that is not there is not an error.
func remove(root, name string) error {
	d, base, err := openParent(root, name, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		defer d.Close()
		err = unix.Unlinkat(int(d.Fd()), base, 0)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing /%s from the image: %w", strings.TrimPrefix(name, "/"), err)
	}
	return nil
}

// symlink makes name a symlink to target, replacing what was there.
// The target is not resolved: it is for the node to follow.
func symlink(root, target, name string) error {
	d, base, err := openParent(root, name, true)
	if err == nil {
		defer d.Close()
		if err = unix.Unlinkat(int(d.Fd()), base, 0); errors.Is(err, unix.ENOENT) {
			err = nil
		}
		if err == nil {
			err = unix.Symlinkat(target, int(d.Fd()), base)
		}
	}
	if err != nil {
		return fmt.Errorf("linking /%s to %s in the image: %w", strings.TrimPrefix(name, "/"), target, err)
	}
	return nil
}

// mkdirAll makes a directory and its parents in the image.
func mkdirAll(root, name string, mode os.FileMode) error {
	r, err := imageroot.Open(root)
	if err == nil {
		defer r.Close()
		var d *os.File
		if d, err = r.MkdirAll(path.Clean("/"+name), mode); err == nil {
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("making /%s in the image: %w", strings.TrimPrefix(name, "/"), err)
	}
	return nil
}

// removeMatching deletes the entries of directory dir whose names start
// with prefix (files or symlinks, never followed).
func removeMatching(root, dir, prefix string) error {
	r, err := imageroot.Open(root)
	if err != nil {
		return err
	}
	defer r.Close()
	d, err := r.OpenIn(dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening /%s in the image: %w", dir, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("listing /%s in the image: %w", dir, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			if err := unix.Unlinkat(int(d.Fd()), n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("removing /%s/%s from the image: %w", dir, n, err)
			}
		}
	}
	return nil
}

func stepHostname(root string, _ Settings) error {
	if err := remove(root, "etc/hostname"); err != nil {
		return err
	}
	// mmdebstrap leaves the build host's resolver; a symlink (to
	// systemd-resolved's stub) is the image's own choice.
	if !isSymlink(root, "etc/resolv.conf") {
		if err := write(root, "etc/resolv.conf", "# Written by bootd: bootd-init writes the node's resolvers here at boot,\n# from DHCP or from the firmware's.\n", 0o644); err != nil {
			return err
		}
	}
	return write(root, "etc/hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n", 0o644)
}

func stepMachineID(root string, _ Settings) error {
	if err := write(root, "etc/machine-id", "", 0o444); err != nil {
		return err
	}
	return symlink(root, "/etc/machine-id", "var/lib/dbus/machine-id")
}

func stepBootNIC(root string, _ Settings) error {
	// ifupdown, if installed, manages only what it is told: loopback.
	if exists(root, "etc/network") {
		if err := write(root, "etc/network/interfaces", "# Written by bootd: the boot NIC is configured by bootd-init and must\n# never be touched by the booted system (the root filesystem is on it).\nauto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n", 0o644); err != nil {
			return err
		}
	}
	// Tell systemd-networkd-wait-online not to wait for the boot NIC
	// (it is not networkd's).
	return write(root, "etc/systemd/system/systemd-networkd-wait-online.service.d/bootd.conf",
		"[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=5\n", 0o644)
}

// enable links a unit into a .wants directory, as systemctl enable would.
func enable(root, wantsDir, unit, target string) error {
	return symlink(root, target, path.Join("etc/systemd/system", wantsDir, unit))
}

func stepConsoles(root string, _ Settings) error {
	if err := enable(root, "getty.target.wants", "serial-getty@ttyS0.service", "/lib/systemd/system/serial-getty@.service"); err != nil {
		return err
	}
	return enable(root, "getty.target.wants", "getty@tty1.service", "/lib/systemd/system/getty@.service")
}

func stepRootAccess(root string, s Settings) error {
	if len(s.AuthorizedKeys) > 0 {
		if err := mkdirAll(root, "root/.ssh", 0o700); err != nil {
			return err
		}
		if err := write(root, "root/.ssh/authorized_keys", strings.Join(s.AuthorizedKeys, "\n")+"\n", 0o600); err != nil {
			return err
		}
	}
	if s.RootPasswordHash == "" {
		return nil
	}
	b, err := readImage(root, "etc/shadow")
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) > 2 && f[0] == "root" {
			f[1] = s.RootPasswordHash
			lines[i] = strings.Join(f, ":")
			found = true
		}
	}
	if !found {
		return fmt.Errorf("no root entry in /etc/shadow")
	}
	return write(root, "etc/shadow", strings.Join(lines, "\n"), 0o640)
}

func stepLogs(root string, s Settings) error {
	if err := write(root, "etc/systemd/journald.conf.d/bootd.conf",
		"# Written by bootd: logs live in RAM on a diskless node and go to the master.\n[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\nForwardToSyslog=yes\n", 0o644); err != nil {
		return err
	}
	var rule string
	switch s.Syslog {
	case "":
		// Optional: a node booted some other way (from a disk, by another
		// server) has no rule file, and rsyslog must start without one.
		rule = "# Written by bootd: forward everything to bootd's syslog receiver, if it\n# listens (bootd-init writes the rule at boot).\ninclude(file=\"" + boot.ForwardConf + "\" mode=\"optional\")\n"
	case "none":
		return nil
	default:
		host, port, err := SyslogTarget(s.Syslog)
		if err != nil {
			return fmt.Errorf("image.syslog: %w", err)
		}
		rule = fmt.Sprintf("# Written by bootd: forward everything to the site's log host.\n*.* @@%s:%s\n", host, port)
	}
	return write(root, "etc/rsyslog.d/60-bootd-forward.conf", rule, 0o644)
}

// hostRE is a DNS name of letters, digits, '-' and dots.
var hostRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

// SyslogTarget splits image.syslog, "HOST" or "HOST:PORT" (TCP, default
// 514), into the host and port of the image's rsyslog forward line ("@@
// HOST:PORT"), and says what is wrong with it; "" and "none" name no host.
// The line is cut at the first ":", so an IPv6 address cannot be given.
func SyslogTarget(s string) (host, port string, err error) {
	if s == "" || s == "none" {
		return "", "", nil
	}
	bad := fmt.Errorf(`want "" (the master the node booted from), "none", or the site's log host as HOST or HOST:PORT (TCP), such as "loghost.example.org:514"; got %q`, s)
	host, port, hasPort := strings.Cut(s, ":")
	if !hasPort {
		port = "514"
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", bad
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() || a.IsUnspecified() {
			return "", "", bad
		}
		return host, port, nil
	}
	if !hostRE.MatchString(host) {
		return "", "", bad
	}
	return host, port, nil
}

// CheckMounts says what is wrong with image.mounts, naming the field.
// Each mount becomes one /etc/fstab line, so no field may hold whitespace
// (a newline would add lines of its own), and a target is a clean
// absolute path: its mount point is made in the image.
func CheckMounts(ms []Mount) error {
	for i, m := range ms {
		key := fmt.Sprintf("image.mounts[%d]", i)
		for _, f := range []struct {
			name, v  string
			optional bool
		}{{"source", m.Source, false}, {"target", m.Target, false}, {"type", m.Type, false}, {"options", m.Options, true}} {
			if f.v == "" && !f.optional {
				return fmt.Errorf("%s.%s: missing (want e.g. {source: \"files:/home\", target: /home, type: nfs})", key, f.name)
			}
			if strings.IndexFunc(f.v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
				return fmt.Errorf("%s.%s: %q holds whitespace or a control character, which /etc/fstab cannot take (write a space as \\040)", key, f.name, f.v)
			}
		}
		if t := m.Target; !path.IsAbs(t) || t == "/" || path.Clean(t) != t {
			return fmt.Errorf("%s.target: want a clean absolute path other than / (no .., no trailing /), such as /home; got %q", key, t)
		}
	}
	return nil
}

func stepFstab(root string, s Settings) error {
	if err := CheckMounts(s.Mounts); err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("# Written by bootd. The root filesystem is bootd's NFS export under a RAM\n# overlay, mounted by bootd-init: it has no entry here.\n")
	for _, m := range s.Mounts {
		opts := m.Options
		if opts == "" {
			opts = "defaults"
		}
		if !strings.Contains(opts, "nofail") {
			// A missing site mount must not stop a node from booting.
			opts += ",nofail"
		}
		if m.Type == "nfs" && !strings.Contains(opts, "_netdev") {
			opts += ",_netdev"
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t0\t0\n", m.Source, m.Target, m.Type, opts)
		if err := mkdirAll(root, m.Target, 0o755); err != nil {
			return err
		}
	}
	return write(root, "etc/fstab", b.String(), 0o644)
}

// hostKeyUnit makes a node's SSH host keys at boot.
const hostKeyUnit = "bootd-ssh-hostkeys.service"

// hostKeyTypes are the keys a node makes. RSA is left out: making one
// takes seconds under emulation, on every boot.
var hostKeyTypes = []string{"ed25519", "ecdsa"}

// hostKeyWants are the units that pull hostKeyUnit in: Debian's ssh.service
// (alias sshd.service), its socket, and sshd@.service, which Debian 13's
// socket activation (and systemd-ssh-generator) runs per connection. They
// are the units Debian 13's own sshd-keygen.service is wanted by.
var hostKeyWants = []string{"ssh.service", "sshd.service", "sshd@.service", "ssh.socket"}

// MaskedGenerators are systemd generators masked in every image: each
// runs (from NFS, under emulation for tens of milliseconds to seconds)
// before systemd starts its first unit, and these have nothing to find on
// a diskless node: a root or swap partition on a local disk (gpt-auto),
// a hibernation image, a TPM, an offline update, a VM's vsock for SSH (the
// ssh generator also loads the vsock modules, and fails, on every boot).
var MaskedGenerators = []string{"systemd-gpt-auto-generator", "systemd-hibernate-resume-generator",
	"systemd-tpm2-generator", "systemd-system-update-generator", "systemd-ssh-generator"}

// DisabledUnits are masked in every image.
var DisabledUnits = []string{
	"apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
	"fstrim.timer", "e2scrub_all.timer", "e2scrub_reap.service", "man-db.timer",
	"systemd-firstboot.service",
}

func stepServices(root string, _ Settings) error {
	for _, u := range DisabledUnits {
		if err := symlink(root, "/dev/null", path.Join("etc/systemd/system", u)); err != nil {
			return err
		}
	}
	for _, g := range MaskedGenerators {
		if err := symlink(root, "/dev/null", path.Join("etc/systemd/system-generators", g)); err != nil {
			return err
		}
	}
	return hostKeys(root)
}

// hostKeys takes the host keys openssh-server's postinst made out of the
// image (they would be every node's, and readable on the export) and has
// each node make its own at boot, into its RAM layer.
func hostKeys(root string) error {
	if err := removeMatching(root, "etc/ssh", "ssh_host_"); err != nil {
		return err
	}
	var unit, conf strings.Builder
	unit.WriteString("# Written by bootd: the image carries no SSH host keys; each node makes its\n" +
		"# own at every boot, in its RAM layer. Keys that are there (put in the\n" +
		"# image by a site's hook) are kept.\n" +
		"[Unit]\nDescription=SSH host keys for this boot\n" +
		"ConditionPathExists=/usr/bin/ssh-keygen\n" +
		// Early, beside udev and the rest of sysinit, not after
		// basic.target: making keys takes seconds under emulation, and
		// multi-user waits for sshd, which waits for the keys. /etc is the
		// RAM layer's from the first instant; local-fs is all it needs.
		"DefaultDependencies=no\nAfter=local-fs.target\nConflicts=shutdown.target\n" +
		// Not Before=ssh.socket: sockets.target, and so basic.target,
		// would wait for the keys; the socket only starts ssh.service,
		// which waits for this unit.
		"Before=ssh.service sshd.service sshd@.service shutdown.target\n\n" +
		"[Service]\nType=oneshot\nRemainAfterExit=yes\n")
	conf.WriteString("# Written by bootd: the host keys " + hostKeyUnit + " makes at boot.\n" +
		"# Named, so that sshd does not look for key types nodes do not have.\n")
	for _, t := range hostKeyTypes {
		key := "/etc/ssh/ssh_host_" + t + "_key"
		fmt.Fprintf(&unit, "ExecStart=/bin/sh -c \"test -e %s || exec ssh-keygen -q -N '' -t %s -f %s\"\n", key, t, key)
		fmt.Fprintf(&conf, "HostKey %s\n", key)
	}
	unit.WriteString("\n[Install]\nWantedBy=" + strings.Join(hostKeyWants, " ") + "\n")
	if err := write(root, path.Join("etc/systemd/system", hostKeyUnit), unit.String(), 0o644); err != nil {
		return err
	}
	for _, w := range hostKeyWants {
		if err := enable(root, w+".wants", hostKeyUnit, path.Join("/etc/systemd/system", hostKeyUnit)); err != nil {
			return err
		}
	}
	return write(root, "etc/ssh/sshd_config.d/bootd-hostkeys.conf", conf.String(), 0o644)
}

// reportUnit reports a node's up and down stages to bootd.
const reportUnit = "bootd-report.service"

// reportScript is what bash runs to send one report: $1 is the stage, $2
// the detail, the rest comes from boot.ReportEnv. The body is the init's
// root report's, and every value in it was checked by the init when it
// wrote the file (nothing needs JSON escaping). The answer's status line
// is read so that the journal says when bootd refused a report.
const reportScript = `read -r up _ </proc/uptime; ` +
	`printf -v body '{"mac":"%s","stage":"%s","image":"%s","generation":%d,"hostname":"%s","detail":"%s at uptime %ss"}' ` +
	`"$BOOTD_MAC" "$1" "$BOOTD_IMAGE" "$BOOTD_GENERATION" "$BOOTD_HOSTNAME" "$2" "$up" || exit; ` +
	`exec 3<>"/dev/tcp/$BOOTD_REPORT_HOST/$BOOTD_REPORT_PORT" || exit; ` +
	`printf 'POST ` + boot.ReportPath + ` HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' ` +
	`"$BOOTD_REPORT" "${#body}" "$body" >&3 || exit; ` +
	`read -r status <&3; status=${status%$'\r'}; ` +
	`case $status in "HTTP/1."?" 2"*) ;; *) echo "bootd-report: $1: bootd answered ${status:-nothing}" >&2; exit 1 ;; esac`

// execQuote quotes a string as one word of a unit's Exec line: systemd
// undoes C escapes inside quotes and expands $ and % itself.
func execQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", "$$", "%", "%%")
	return `"` + r.Replace(s) + `"`
}

// reportExec is an Exec line sending one report. timeout(1) bounds it
// (a master that accepts and never answers included); "-" keeps a failed
// report from failing the unit, and so the system. The up report runs
// after multi-user, so waiting delays nothing: it gets 30 s, as a loaded
// node took 6 s just to start bash and send it (5 s lost the report in
// the boot matrix). The down report holds up the shutdown: 5 s.
func reportExec(stage, detail string) string {
	secs := "5"
	if stage == "up" {
		secs = "30"
	}
	return "-/usr/bin/timeout " + secs + " /bin/bash -c " + execQuote(reportScript) + " bootd-report " + stage + " " + execQuote(detail)
}

func stepReport(root string, _ Settings) error {
	unit := "# Written by bootd: reports this node's stages to the bootd master it booted\n" +
		"# from. No agent: one report at multi-user, one at shutdown.\n" +
		"[Unit]\nDescription=Tell the bootd master this node is up, and when it shuts down\n" +
		"ConditionPathExists=" + boot.ReportEnv + "\n" +
		// Wanted by multi-user.target yet ordered after it, as
		// systemd-update-utmp-runlevel.service is: up means multi-user
		// was reached. At shutdown it stops before what multi-user
		// pulled in, while the node is whole. The boot NIC is up since
		// the initrd: no network-online.target.
		"After=multi-user.target\n\n" +
		"[Service]\nType=oneshot\nRemainAfterExit=yes\n" +
		"EnvironmentFile=" + boot.ReportEnv + "\n" +
		"ExecStart=" + reportExec("up", "multi-user reached") + "\n" +
		"ExecStop=" + reportExec("down", "shutting down") + "\n\n" +
		"[Install]\nWantedBy=multi-user.target\n"
	if err := write(root, path.Join("etc/systemd/system", reportUnit), unit, 0o644); err != nil {
		return err
	}
	return enable(root, "multi-user.target.wants", reportUnit, path.Join("/etc/systemd/system", reportUnit))
}

func stepNIS(root string, s Settings) error {
	if s.NIS == nil || s.NIS.Domain == "" {
		return nil
	}
	if err := write(root, "etc/defaultdomain", s.NIS.Domain+"\n", 0o644); err != nil {
		return err
	}
	if err := write(root, "etc/yp.conf", fmt.Sprintf("domain %s server %s\n", s.NIS.Domain, s.NIS.Server), 0o644); err != nil {
		return err
	}
	b, err := readImage(root, "etc/nsswitch.conf")
	if err != nil {
		return err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "passwd:" || f[0] == "group:" || f[0] == "shadow:") && !strings.Contains(l, "nis") {
			l += " nis"
		}
		out = append(out, l)
	}
	return write(root, "etc/nsswitch.conf", strings.Join(out, "\n"), 0o644)
}

func stepUpdated(root string, _ Settings) error {
	r, err := imageroot.Open(root)
	if err != nil {
		return err
	}
	defer r.Close()
	usr, err := r.OpenIn("usr", unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no /usr, nothing to be up to date with
	}
	if err != nil {
		return fmt.Errorf("the image's /usr: %w", err)
	}
	var st unix.Stat_t
	err = unix.Fstat(int(usr.Fd()), &st)
	usr.Close()
	if err != nil {
		return fmt.Errorf("the image's /usr: %w", err)
	}
	content := fmt.Sprintf("# Written by bootd, as systemd-update-done would: the time of /usr that\n# this directory was updated for. See man:systemd-update-done.service(8).\nTIMESTAMP_NSEC=%d\n", st.Mtim.Nano())
	for _, name := range []string{"etc/.updated", "var/.updated"} {
		if err := write(root, name, content, 0o644); err != nil {
			return err
		}
		d, base, err := openParent(root, name, false)
		if err != nil {
			return err
		}
		err = unix.UtimesNanoAt(int(d.Fd()), base, []unix.Timespec{st.Mtim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
		d.Close()
		if err != nil {
			return fmt.Errorf("setting the time of /%s in the image: %w", name, err)
		}
	}
	return nil
}

// Prepare runs every step on a root tree.
func Prepare(root string, s Settings) ([]string, error) {
	var done []string
	for _, st := range Steps {
		if err := st.Do(root, s); err != nil {
			return done, fmt.Errorf("preparing the image (%s): %w", st.Name, err)
		}
		done = append(done, st.Name)
	}
	sort.Strings(done)
	return done, nil
}

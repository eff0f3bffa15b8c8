package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Settings are the site's choices for prepared images (config key
// "image").
type Settings struct {
	// RootPasswordHash is a crypt(3) hash for root ("" leaves root locked).
	RootPasswordHash string `yaml:"root_password_hash"`
	// AuthorizedKeys go into /root/.ssh/authorized_keys.
	AuthorizedKeys []string `yaml:"authorized_keys"`
	// Syslog says where nodes send their logs: "" is the master (the NFS
	// server a node booted from), "none" disables forwarding, anything
	// else is HOST or HOST:PORT.
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
	{"hostname", "The hostname comes from the kernel command line (bootd-init sets it and writes /etc/hostname into the RAM layer); the image carries none, and /etc/hosts only localhost.", stepHostname},
	{"machine-id", "An empty /etc/machine-id makes systemd generate one per boot: nodes sharing an image must not share an identity.", stepMachineID},
	{"boot-nic", "The booted system must never reconfigure or down the boot NIC (the root filesystem is on it): ifupdown gets no entry for it, and systemd-networkd and NetworkManager are told at boot, by files bootd-init writes under /run, to leave it unmanaged.", stepBootNIC},
	{"consoles", "A getty on the serial console (ttyS0) and on the VGA console (tty1).", stepConsoles},
	{"root-access", "root's password hash and authorized_keys from the config.", stepRootAccess},
	{"logs", "The journal stays in RAM (volatile, capped) and rsyslog forwards everything to the master (or image.syslog) over TCP, as the seed's nodes did.", stepLogs},
	{"fstab", "No root entry (bootd-init mounts it); site mounts from the config, because heavy writes must not fill the RAM layer.", stepFstab},
	{"services", "Services that make no sense on a shared read-only root are disabled: apt timers, fstrim, e2scrub, man-db. SSH host keys are made once per image and shared by its nodes.", stepServices},
	{"nis", "Optional NIS client: domain and server from the config.", stepNIS},
}

func write(root, name, content string, mode os.FileMode) error {
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// Never write through a symlink in the image: it could point anywhere
	// on the master.
	if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSymlink != 0 {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return os.WriteFile(p, []byte(content), mode)
}

func stepHostname(root string, _ Settings) error {
	os.Remove(filepath.Join(root, "etc/hostname"))
	return write(root, "etc/hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n", 0o644)
}

func stepMachineID(root string, _ Settings) error {
	if err := write(root, "etc/machine-id", "", 0o444); err != nil {
		return err
	}
	dbus := filepath.Join(root, "var/lib/dbus/machine-id")
	os.Remove(dbus)
	os.MkdirAll(filepath.Dir(dbus), 0o755)
	return os.Symlink("/etc/machine-id", dbus)
}

func stepBootNIC(root string, _ Settings) error {
	// ifupdown, if installed, manages only what it is told: loopback.
	if _, err := os.Stat(filepath.Join(root, "etc/network")); err == nil {
		if err := write(root, "etc/network/interfaces", "# Written by bootd: the boot NIC is configured by bootd-init and must\n# never be touched by the booted system (the root filesystem is on it).\nauto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n", 0o644); err != nil {
			return err
		}
	}
	// Tell systemd-networkd-wait-online not to wait for the boot NIC
	// (it is not networkd's).
	return write(root, "etc/systemd/system/systemd-networkd-wait-online.service.d/bootd.conf",
		"[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=5\n", 0o644)
}

func enable(root, wantsDir, unit, target string) error {
	d := filepath.Join(root, "etc/systemd/system", wantsDir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	l := filepath.Join(d, unit)
	os.Remove(l)
	return os.Symlink(target, l)
}

func stepConsoles(root string, _ Settings) error {
	if err := enable(root, "getty.target.wants", "serial-getty@ttyS0.service", "/lib/systemd/system/serial-getty@.service"); err != nil {
		return err
	}
	return enable(root, "getty.target.wants", "getty@tty1.service", "/lib/systemd/system/getty@.service")
}

func stepRootAccess(root string, s Settings) error {
	if len(s.AuthorizedKeys) > 0 {
		if err := os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700); err != nil {
			return err
		}
		if err := write(root, "root/.ssh/authorized_keys", strings.Join(s.AuthorizedKeys, "\n")+"\n", 0o600); err != nil {
			return err
		}
	}
	if s.RootPasswordHash == "" {
		return nil
	}
	p := filepath.Join(root, "etc/shadow")
	b, err := os.ReadFile(p)
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
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o640)
}

// ForwardConf is where bootd-init writes the rsyslog forwarding rule at
// boot, naming the master it booted from.
const ForwardConf = "/run/bootd/rsyslog-forward.conf"

func stepLogs(root string, s Settings) error {
	if err := write(root, "etc/systemd/journald.conf.d/bootd.conf",
		"# Written by bootd: logs live in RAM on a diskless node and go to the master.\n[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\nForwardToSyslog=yes\n", 0o644); err != nil {
		return err
	}
	var rule string
	switch s.Syslog {
	case "":
		rule = "# Written by bootd: forward everything to the master this node booted from\n# (bootd-init writes the rule at boot).\n$IncludeConfig " + ForwardConf + "\n"
	case "none":
		return nil
	default:
		host, port := s.Syslog, "514"
		if h, p, ok := strings.Cut(s.Syslog, ":"); ok {
			host, port = h, p
		}
		rule = fmt.Sprintf("# Written by bootd: forward everything to the site's log host.\n*.* @@%s:%s\n", host, port)
	}
	return write(root, "etc/rsyslog.d/60-bootd-forward.conf", rule, 0o644)
}

func stepFstab(root string, s Settings) error {
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
		os.MkdirAll(filepath.Join(root, m.Target), 0o755)
	}
	return write(root, "etc/fstab", b.String(), 0o644)
}

// DisabledUnits are masked in every image.
var DisabledUnits = []string{
	"apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
	"fstrim.timer", "e2scrub_all.timer", "e2scrub_reap.service", "man-db.timer",
	"systemd-firstboot.service",
}

func stepServices(root string, _ Settings) error {
	for _, u := range DisabledUnits {
		l := filepath.Join(root, "etc/systemd/system", u)
		os.Remove(l)
		if err := os.Symlink("/dev/null", l); err != nil {
			return err
		}
	}
	// Host keys are made once per image, here, so that nodes never make
	// their own at boot (and every node of an image shares them).
	if _, err := os.Stat(filepath.Join(root, "usr/bin/ssh-keygen")); err == nil {
		if out, err := exec.Command("chroot", root, "ssh-keygen", "-A").CombinedOutput(); err != nil {
			return fmt.Errorf("ssh-keygen -A: %v: %s", err, out)
		}
	}
	return nil
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
	p := filepath.Join(root, "etc/nsswitch.conf")
	b, err := os.ReadFile(p)
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
	return os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644)
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

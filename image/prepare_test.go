package image

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/store"
)

// snapshot is every file and link under dir, with its content or target
// and mode, to prove a directory was not touched.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		out[strings.TrimPrefix(p, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s changed: %q, was %q", what, k, after[k], v)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s appeared: %q", what, k, v)
		}
	}
}

// fakeMaster is a directory standing for the master's own /etc and
// /root: what a symlink in an image could point at.
func fakeMaster(t *testing.T) string {
	m := t.TempDir()
	files := map[string]string{
		"shadow":                         "root:MASTER-HASH:19000:0:99999:7:::\n",
		"nsswitch.conf":                  "passwd: files\ngroup: files\nshadow: files\n",
		"hosts":                          "10.9.9.9 master\n",
		"ssh/ssh_host_ed25519_key":       "MASTER PRIVATE KEY\n",
		"ssh/sshd_config.d/site.conf":    "PermitRootLogin no\n",
		"dotssh/authorized_keys":         "ssh-ed25519 MASTER admin@master\n",
		"systemd/system/keep.service":    "[Service]\n",
		"network/interfaces":             "auto eth0\niface eth0 inet dhcp\n",
		"systemd/journald.conf.d/x.conf": "[Journal]\n",
	}
	for name, content := range files {
		os.MkdirAll(filepath.Join(m, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(m, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// escapingRoot is fakeRoot with files and directories replaced by
// symlinks to the master: absolute ones, and a relative one that climbs
// further up than the root.
func escapingRoot(t *testing.T, master string) string {
	root := fakeRoot(t)
	links := map[string]string{
		"etc/shadow":        filepath.Join(master, "shadow"),
		"etc/ssh":           filepath.Join(master, "ssh"),
		"root/.ssh":         filepath.Join(master, "dotssh"),
		"etc/systemd":       filepath.Join(master, "systemd"),
		"etc/network":       filepath.Join(master, "network"),
		"etc/hosts":         filepath.Join(master, "hosts"),
		"etc/nsswitch.conf": strings.Repeat("../", 30) + strings.TrimPrefix(filepath.Join(master, "nsswitch.conf"), "/"),
	}
	for name, target := range links {
		p := filepath.Join(root, name)
		os.RemoveAll(p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var hostileSettings = Settings{
	RootPasswordHash: "$6$salt$hash",
	AuthorizedKeys:   []string{"ssh-ed25519 AAAA admin@site"},
	Mounts:           []Mount{{Source: "files:/home", Target: "/home", Type: "nfs"}},
	NIS:              &NIS{Domain: "cluster", Server: "10.0.0.1"},
}

// TestPrepareStaysInsideTheRoot: an image whose /etc/shadow, /etc/ssh,
// /root/.ssh, /etc/systemd... are symlinks to the master's files. On the
// node those links point inside the image, and so they must for bootd:
// the master's files stay byte-identical and the writes land in the image.
func TestPrepareStaysInsideTheRoot(t *testing.T) {
	master := fakeMaster(t)
	root := escapingRoot(t, master)
	// What the links name, as the node sees them: inside the image.
	mirror := filepath.Join(root, master)
	for name, content := range map[string]string{
		"shadow":                       "root:*:19000:0:99999:7:::\n",
		"nsswitch.conf":                "passwd: files\ngroup: files\nshadow: files\n",
		"hosts":                        "",
		"ssh/ssh_host_rsa_key":         "IMAGE KEY\n",
		"ssh/ssh_host_ed25519_key":     "IMAGE KEY\n",
		"ssh/ssh_host_ed25519_key.pub": "IMAGE KEY\n",
		"dotssh/.keep":                 "",
		"systemd/.keep":                "",
		"network/.keep":                "",
	} {
		os.MkdirAll(filepath.Join(mirror, filepath.Dir(name)), 0o755)
		os.WriteFile(filepath.Join(mirror, name), []byte(content), 0o644)
	}
	before := snapshot(t, master)
	if _, err := Prepare(root, hostileSettings); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "the master", before, snapshot(t, master))

	// The writes are in the image: through the links, resolved inside it,
	// or in place of a link where a file is replaced.
	inImage := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("%s is not in the image: %v", name, err)
		}
		return string(b)
	}
	if s := inImage("etc/shadow"); !strings.HasPrefix(s, "root:$6$salt$hash:") {
		t.Errorf("the image's shadow: %q", s)
	}
	if k := inImage(filepath.Join(master, "dotssh/authorized_keys")); k != "ssh-ed25519 AAAA admin@site\n" {
		t.Errorf("the image's authorized_keys: %q", k)
	}
	if !strings.Contains(inImage(filepath.Join(master, "systemd/system/systemd-networkd-wait-online.service.d/bootd.conf")), "--any") {
		t.Error("the networkd drop-in is not in the image")
	}
	if !strings.Contains(inImage("etc/nsswitch.conf"), "passwd: files nis") {
		t.Errorf("the image's nsswitch.conf: %q", inImage("etc/nsswitch.conf"))
	}
	if !strings.Contains(inImage("etc/hosts"), "localhost") {
		t.Error("the image's hosts")
	}
	if _, err := os.Lstat(filepath.Join(mirror, "ssh/ssh_host_ed25519_key")); err == nil {
		t.Error("the image's host key (behind an absolute /etc/ssh link) is still there")
	}
}

// TestPrepareRefusesDanglingEscapes: the same links with nothing behind
// them inside the image, each step on its own (so that one failing does
// not hide the next). A step may fail, but it never reaches the master.
func TestPrepareRefusesDanglingEscapes(t *testing.T) {
	for _, st := range Steps {
		for _, s := range []Settings{hostileSettings, {RootPasswordHash: "$6$x"}, {}} {
			master := fakeMaster(t)
			root := escapingRoot(t, master)
			before := snapshot(t, master)
			err := st.Do(root, s)
			t.Logf("%s: %v", st.Name, err)
			sameTree(t, "the master, after "+st.Name, before, snapshot(t, master))
		}
	}
}

// TestPrepareHostKeysPerBoot: the prepared image carries no SSH host
// private (or public) keys; a unit enabled for ssh makes them at boot.
func TestPrepareHostKeysPerBoot(t *testing.T) {
	root := fakeRoot(t)
	for _, k := range []string{"rsa", "ecdsa", "ed25519"} {
		for _, suffix := range []string{"", ".pub"} {
			p := filepath.Join(root, "etc/ssh/ssh_host_"+k+"_key"+suffix)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("key"), 0o600)
		}
	}
	os.WriteFile(filepath.Join(root, "etc/ssh/sshd_config"), []byte("Include /etc/ssh/sshd_config.d/*.conf\n"), 0o644)
	if _, err := Prepare(root, Settings{}); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*")); len(m) != 0 {
		t.Errorf("host keys left in the image: %v", m)
	}
	unit := read(t, root, "etc/systemd/system/"+hostKeyUnit)
	for _, want := range []string{
		"ssh-keygen -q -N '' -t ed25519 -f /etc/ssh/ssh_host_ed25519_key",
		"ssh-keygen -q -N '' -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key",
		"Before=ssh.service", "Type=oneshot",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q:\n%s", hostKeyUnit, want, unit)
		}
	}
	if strings.Contains(unit, "-t rsa") || strings.Contains(unit, "ssh_host_rsa") {
		t.Errorf("%s makes an RSA key:\n%s", hostKeyUnit, unit)
	}
	for _, wants := range []string{"ssh.service.wants", "sshd.service.wants", "ssh.socket.wants", "sshd@.service.wants"} {
		l, err := os.Readlink(filepath.Join(root, "etc/systemd/system", wants, hostKeyUnit))
		if err != nil || l != "/etc/systemd/system/"+hostKeyUnit {
			t.Errorf("%s not enabled in %s: %q %v", hostKeyUnit, wants, l, err)
		}
	}
	conf := read(t, root, "etc/ssh/sshd_config.d/bootd-hostkeys.conf")
	if !strings.Contains(conf, "HostKey /etc/ssh/ssh_host_ed25519_key\n") || !strings.Contains(conf, "HostKey /etc/ssh/ssh_host_ecdsa_key\n") || strings.Contains(conf, "ssh_host_rsa") {
		t.Errorf("sshd drop-in:\n%s", conf)
	}
	for _, st := range Steps {
		if st.Name == "services" && (!strings.Contains(st.Why, "at boot") || !strings.Contains(st.Why, "hook")) {
			t.Errorf("the services step does not say what it does with host keys: %s", st.Why)
		}
	}
}

// TestMountsRefused: image.mounts must not put a path outside the image
// (or a relative one) nor a second line into /etc/fstab.
func TestMountsRefused(t *testing.T) {
	ok := Mount{Source: "files:/home", Target: "/home", Type: "nfs", Options: "vers=3"}
	for _, c := range []struct {
		m     Mount
		field string
	}{
		{Mount{Source: "LABEL=x", Target: "scratch", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/../../etc", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/scratch/../etc", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/scr atch", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x /dev/sda1", Target: "/scratch", Type: "ext4"}, "image.mounts[1].source"},
		{Mount{Source: "LABEL=x\n/dev/sda1 /etc ext4 defaults 0 0\n#", Target: "/scratch", Type: "ext4"}, "image.mounts[1].source"},
		{Mount{Source: "", Target: "/scratch", Type: "ext4"}, "image.mounts[1].source"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: "ext4\tdefaults"}, "image.mounts[1].type"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: ""}, "image.mounts[1].type"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: "ext4", Options: "rw\n/dev/sdb /var ext4 defaults"}, "image.mounts[1].options"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: "ext4", Options: "rw 0 0"}, "image.mounts[1].options"},
	} {
		root := fakeRoot(t)
		s := Settings{Mounts: []Mount{ok, c.m}}
		_, err := Prepare(root, s)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("mount %+v: %v, want an error naming %s", c.m, err, c.field)
		}
		if b, err := os.ReadFile(filepath.Join(root, "etc/fstab")); err == nil && strings.Contains(string(b), "sda") {
			t.Errorf("mount %+v: injected into fstab:\n%s", c.m, b)
		}
		if err := Check(store.New(t.TempDir()), BuildOptions{Name: "ok", Suite: "bookworm", Settings: s}); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("Check, mount %+v: %v, want an error naming %s", c.m, err, c.field)
		}
	}
	// A good one still goes in.
	root := fakeRoot(t)
	if _, err := Prepare(root, Settings{Mounts: []Mount{ok}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read(t, root, "etc/fstab"), "files:/home\t/home\tnfs\tvers=3,nofail,_netdev\t0\t0\n") {
		t.Errorf("fstab:\n%s", read(t, root, "etc/fstab"))
	}
}

// TestPrepareRefusesSpecialFiles: a FIFO where a step writes a file is
// refused, not opened (which would hang the build for want of a reader).
func TestPrepareRefusesSpecialFiles(t *testing.T) {
	root := fakeRoot(t)
	os.Remove(filepath.Join(root, "etc/hosts"))
	if err := unix.Mkfifo(filepath.Join(root, "etc/hosts"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- stepHostname(root, Settings{}) }()
	select {
	case err := <-done:
		// ENXIO (no reader), or "not a regular file" (one is there).
		if err == nil || !strings.Contains(err.Error(), "/etc/hosts") {
			t.Errorf("writing over a FIFO: %v, want a refusal", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writing /etc/hosts hung on a FIFO")
	}
}

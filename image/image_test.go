package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/store"
)

// fakeRoot is what a bootstrap leaves, as far as the steps care.
func fakeRoot(t *testing.T) string {
	root := t.TempDir()
	files := map[string]string{
		"etc/hostname":       "debian\n",
		"etc/machine-id":     "0123456789abcdef0123456789abcdef\n",
		"etc/shadow":         "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
		"etc/nsswitch.conf":  "passwd:         files systemd\ngroup:          files systemd\nshadow:         files\nhosts:          files dns\n",
		"etc/network/.keep":  "",
		"etc/rsyslog.conf":   "",
		"etc/systemd/.keep":  "",
		"var/lib/dbus/.keep": "",
		"usr/bin/.keep":      "",
		"etc/resolv.conf":    "nameserver 10.255.255.53\n", // the build host's
	}
	for name, content := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755)
		os.WriteFile(filepath.Join(root, name), []byte(content), 0o644)
	}
	return root
}

func read(t *testing.T, root, name string) string {
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(b)
}

func TestPrepare(t *testing.T) {
	root := fakeRoot(t)
	s := Settings{
		RootPasswordHash: "$6$salt$hash",
		AuthorizedKeys:   []string{"ssh-ed25519 AAAA admin@master"},
		Mounts:           []Mount{{Source: "files:/home", Target: "/home", Type: "nfs", Options: "vers=3"}, {Source: "LABEL=scratch", Target: "/scratch", Type: "ext4"}},
		NIS:              &NIS{Domain: "cluster", Server: "10.0.0.1"},
	}
	done, err := Prepare(root, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(Steps) {
		t.Errorf("steps done: %v", done)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/hostname")); err == nil {
		t.Error("/etc/hostname kept: the node's name must come from the command line")
	}
	if read(t, root, "etc/machine-id") != "" {
		t.Error("machine-id not emptied")
	}
	if r := read(t, root, "etc/resolv.conf"); strings.Contains(r, "nameserver") {
		t.Errorf("the build host's resolver kept: %q", r)
	}
	var usr unix.Stat_t
	unix.Stat(filepath.Join(root, "usr"), &usr)
	for _, u := range []string{"etc/.updated", "var/.updated"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, u), &st); err != nil || st.Mtim != usr.Mtim ||
			!strings.Contains(read(t, root, u), fmt.Sprintf("TIMESTAMP_NSEC=%d\n", usr.Mtim.Nano())) {
			t.Errorf("%s: %v, time %v, /usr's %v: systemd would run ldconfig on every boot", u, err, st.Mtim, usr.Mtim)
		}
	}
	if l, _ := os.Readlink(filepath.Join(root, "var/lib/dbus/machine-id")); l != "/etc/machine-id" {
		t.Errorf("dbus machine-id link %q", l)
	}
	if ifs := read(t, root, "etc/network/interfaces"); strings.Contains(ifs, "eth0") || !strings.Contains(ifs, "iface lo inet loopback") {
		t.Errorf("interfaces:\n%s", ifs)
	}
	for _, l := range []string{"etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service", "etc/systemd/system/getty.target.wants/getty@tty1.service"} {
		if _, err := os.Readlink(filepath.Join(root, l)); err != nil {
			t.Errorf("console getty not enabled: %s", l)
		}
	}
	if !strings.HasPrefix(read(t, root, "etc/shadow"), "root:$6$salt$hash:19000") {
		t.Errorf("shadow: %s", read(t, root, "etc/shadow"))
	}
	if read(t, root, "root/.ssh/authorized_keys") != "ssh-ed25519 AAAA admin@master\n" {
		t.Error("authorized_keys")
	}
	if j := read(t, root, "etc/systemd/journald.conf.d/bootd.conf"); !strings.Contains(j, "Storage=volatile") {
		t.Errorf("journald: %s", j)
	}
	if r := read(t, root, "etc/rsyslog.d/60-bootd-forward.conf"); !strings.Contains(r, `include(file="`+boot.ForwardConf+`" mode="optional")`) {
		t.Errorf("rsyslog: %s", r)
	}
	fstab := read(t, root, "etc/fstab")
	if strings.Contains(fstab, "\t/\t") || !strings.Contains(fstab, "files:/home\t/home\tnfs\tvers=3,nofail,_netdev") || !strings.Contains(fstab, "LABEL=scratch\t/scratch\text4\tdefaults,nofail") {
		t.Errorf("fstab:\n%s", fstab)
	}
	for _, g := range MaskedGenerators {
		if l, _ := os.Readlink(filepath.Join(root, "etc/systemd/system-generators", g)); l != "/dev/null" {
			t.Errorf("generator %s not masked", g)
		}
	}
	for _, u := range DisabledUnits {
		if l, _ := os.Readlink(filepath.Join(root, "etc/systemd/system", u)); l != "/dev/null" {
			t.Errorf("%s not masked", u)
		}
	}
	if read(t, root, "etc/yp.conf") != "domain cluster server 10.0.0.1\n" || !strings.Contains(read(t, root, "etc/nsswitch.conf"), "passwd:         files systemd nis") {
		t.Error("NIS not set up")
	}
	// A site log host instead of the master; or none.
	Prepare(root, Settings{Syslog: "logs.site:1514"})
	if r := read(t, root, "etc/rsyslog.d/60-bootd-forward.conf"); !strings.Contains(r, "*.* @@logs.site:1514") {
		t.Errorf("rsyslog with a site host: %s", r)
	}
}

func TestPrepareDoesNotFollowSymlinksOut(t *testing.T) {
	root := fakeRoot(t)
	outside := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(outside, []byte("keep"), 0o644)
	os.Remove(filepath.Join(root, "etc/hosts"))
	os.Symlink(outside, filepath.Join(root, "etc/hosts"))
	if _, err := Prepare(root, Settings{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Fatal("a symlink in the image made bootd write outside it")
	}
}

func TestGenerationsPublishRollbackRemove(t *testing.T) {
	st := store.New(t.TempDir())
	for _, g := range []int{1, 2, 3} {
		if err := bootable(context.Background(), st.GenDir("img", g)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Publish("img", 3); err != nil {
		t.Fatal(err)
	}
	if g, err := Rollback(st, "img"); err != nil || g != 2 {
		t.Fatalf("rollback: %d %v", g, err)
	}
	if err := Remove(st, "img", 2); err == nil || !strings.Contains(err.Error(), "is current") {
		t.Errorf("removing the current generation: %v", err)
	}
	if err := Remove(st, "img", 3); err != nil {
		t.Fatal(err)
	}
	if err := Remove(st, "img", 7); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("removing a missing generation: %v", err)
	}
	if err := Remove(st, "nope", 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("removing from a missing image: %v", err)
	}
	Rollback(st, "img")
	if _, err := Rollback(st, "img"); err == nil || !strings.Contains(err.Error(), "oldest") {
		t.Errorf("rolling back past the oldest: %v", err)
	}
	infos, _ := List(st)
	if len(infos) != 2 || !infos[0].Current || infos[1].Generation != 2 {
		t.Errorf("list %+v", infos)
	}
	// The next build number goes past what exists and what is building.
	os.MkdirAll(filepath.Join(st.ImagesDir(), "img", fmt.Sprintf(".build-5-%d", os.Getpid())), 0o755)
	if n, err := st.NewGeneration("img", 0); n != 6 {
		t.Errorf("next generation with 5 building: %d %v, want 6", n, err)
	}
}

// TestRemoveRefusesMounts: `image rm` of a generation with a filesystem
// mounted inside (an admin's bind mount of /home into a chroot) deletes
// nothing, even when the state directory is reached through a symlink;
// before, it renamed and RemoveAll'ed through the mount.
func TestRemoveRefusesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	st := store.New(link)
	for g := 1; g <= 2; g++ {
		os.MkdirAll(filepath.Join(st.RootDir("img", g), "home"), 0o755)
		if err := bootable(context.Background(), st.GenDir("img", g)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Publish("img", 2); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(real, "images/img/1/root/home")
	if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(mp, syscall.MNT_DETACH)
	precious := filepath.Join(mp, "user-file")
	os.WriteFile(precious, []byte("keep me"), 0o644)
	err := Remove(st, "img", 1)
	if err == nil || !strings.Contains(err.Error(), "mounted inside") {
		t.Errorf("removing a generation with a mount inside: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(precious); string(b) != "keep me" {
		t.Errorf("the mounted filesystem's file is gone")
	}
	if err := st.Has("img", 1); err != nil {
		t.Errorf("the refused generation is gone: %v", err)
	}
	// The walker itself never crosses into another filesystem, should a
	// mount appear after the check.
	if err := removeSameFS(filepath.Join(real, "images/img/1")); err == nil {
		t.Errorf("removeSameFS went through a mount without an error")
	}
	if b, _ := os.ReadFile(precious); string(b) != "keep me" {
		t.Errorf("removeSameFS deleted inside a mount")
	}
	syscall.Unmount(mp, syscall.MNT_DETACH)
	if err := Remove(st, "img", 1); err != nil {
		t.Errorf("removing it once unmounted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(real, "images/img/1")); !os.IsNotExist(err) {
		t.Errorf("generation 1 still there: %v", err)
	}
}

func TestBuildRefusals(t *testing.T) {
	st := store.New(t.TempDir())
	ctx := context.Background()
	for _, c := range []struct {
		opt  BuildOptions
		want string
	}{
		{BuildOptions{Name: "Bad Name", Suite: "bookworm"}, "image name"},
		{BuildOptions{Name: "ok", Suite: "jessie"}, `suite "jessie": bootd builds bookworm or trixie`},
		{BuildOptions{Name: "ok", Suite: "bookworm", Hooks: []string{"/nonexistent/hook"}}, "hook /nonexistent/hook"},
	} {
		if _, err := Build(ctx, st, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.opt, err, c.want)
		}
	}
	if os.Geteuid() != 0 {
		if _, err := Build(ctx, st, BuildOptions{Name: "ok", Suite: "bookworm"}); err == nil || !strings.Contains(err.Error(), "needs root") {
			t.Errorf("not root: %v", err)
		}
	}
	if gens, _ := st.Generations("ok"); len(gens) != 0 {
		t.Errorf("a refused build left generations %v", gens)
	}
}

func TestBuildRefusesWithoutSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the space check comes after the root check")
	}
	old := MinFreeBytes
	MinFreeBytes = 1 << 62
	defer func() { MinFreeBytes = old }()
	st := store.New(t.TempDir())
	if _, err := Build(context.Background(), st, BuildOptions{Name: "ok", Suite: "bookworm"}); err == nil || !strings.Contains(err.Error(), "not enough space") {
		t.Errorf("no space: %v", err)
	}
}

// TestRemoveBuildUnmountsFirst: a build killed with filesystems mounted in
// its chroot is cleaned up without deleting through the mounts.
func TestRemoveBuildUnmountsFirst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := filepath.Join(t.TempDir(), ".build-9-1")
	mp := filepath.Join(dir, "root", "proc dir")
	os.MkdirAll(mp, 0o755)
	if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mp, "inside-the-mount"), []byte("x"), 0o644)
	if got := mountsBelow(dir); len(got) != 1 || got[0] != mp {
		t.Fatalf("mountsBelow = %q (escaped names must be read back)", got)
	}
	if err := removeBuild(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("the build directory is still there")
	}
	if len(mountsBelow(dir)) != 0 {
		t.Error("a mount is left")
	}
}

// TestRemoveStopsAtBindMount: a directory of the same filesystem bound
// into a generation (the device number is the same) is not deleted
// through by the walker.
func TestRemoveStopsAtBindMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	base := t.TempDir()
	src := filepath.Join(base, "home-on-the-same-disk")
	gen := filepath.Join(base, "gen", "root", "home")
	os.MkdirAll(src, 0o755)
	os.MkdirAll(gen, 0o755)
	precious := filepath.Join(src, "user-file")
	os.WriteFile(precious, []byte("keep me"), 0o644)
	if err := syscall.Mount(src, gen, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(gen, syscall.MNT_DETACH)
	if err := removeSameFS(filepath.Join(base, "gen")); err == nil {
		t.Error("removeSameFS went through a bind mount without an error")
	}
	if b, _ := os.ReadFile(precious); string(b) != "keep me" {
		t.Error("removeSameFS deleted inside a bind mount of the same filesystem")
	}
}

package image

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bootd/bootd/store"
)

// toyImage makes generation 1 of image "toy": a few files and busybox (with
// the libraries it needs) as /bin/sh, enough to run update commands in.
func toyImage(t *testing.T) (*store.Store, string) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (overlay mount, chroot): not in -short")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is needed (apt-get install busybox)")
	}
	st := store.New(t.TempDir())
	root := st.RootDir("toy", 1)
	files := map[string]string{"etc/keep": "keep\n", "etc/change": "old\n", "etc/gone": "gone\n",
		"usr/lib/dir/a": "a\n", "usr/lib/dir/b": "b\n", "etc/resolv.conf": ""}
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "run", "tmp", "usr/sbin", "opt"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(to), 0o755)
		if err := os.WriteFile(to, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(bb, filepath.Join(root, "bin/busybox"))
	out, _ := exec.Command("ldd", bb).Output()
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			copyFile(f, filepath.Join(root, f))
		}
	}
	for _, cmd := range []string{"sh", "echo", "rm", "mkdir", "false", "cat"} {
		os.Symlink("busybox", filepath.Join(root, "bin", cmd))
	}
	boot := st.BootDir("toy", 1)
	os.MkdirAll(boot, 0o755)
	os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(boot, "initrd.img"), []byte("initrd"), 0o644)
	if err := st.Publish("toy", 1); err != nil {
		t.Fatal(err)
	}
	old := prepareUpdated
	prepareUpdated = func(string, Settings) ([]string, error) { return nil, nil }
	t.Cleanup(func() { prepareUpdated = old })
	return st, root
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func contents(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TestUpdateNeverTouchesTheRunningGeneration: generation 2 has the
// changes; generation 1 is byte for byte and inode for inode what it was;
// what did not change is shared.
func TestUpdateNeverTouchesTheRunningGeneration(t *testing.T) {
	st, root1 := toyImage(t)
	changeIno := inode(t, filepath.Join(root1, "etc/change"))
	gen, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Run: []string{
		"echo new > /etc/change",
		"rm /etc/gone",
		"mkdir -p /opt/new && echo x > /opt/new/f",
		// A directory replaced whole: overlayfs marks it opaque.
		"rm -r /usr/lib/dir && mkdir /usr/lib/dir && echo g > /usr/lib/dir/g",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if gen != 2 {
		t.Fatalf("generation %d", gen)
	}
	root2 := st.RootDir("toy", 2)
	// Generation 1, as nodes running it see it.
	if contents(filepath.Join(root1, "etc/change")) != "old\n" || inode(t, filepath.Join(root1, "etc/change")) != changeIno ||
		contents(filepath.Join(root1, "etc/gone")) != "gone\n" || contents(filepath.Join(root1, "usr/lib/dir/a")) != "a\n" {
		t.Error("generation 1 changed")
	}
	if _, err := os.Stat(filepath.Join(root1, "opt/new")); err == nil {
		t.Error("generation 1 got a new directory")
	}
	// Generation 2.
	if contents(filepath.Join(root2, "etc/change")) != "new\n" || contents(filepath.Join(root2, "opt/new/f")) != "x\n" {
		t.Errorf("changes missing: change=%q f=%q", contents(filepath.Join(root2, "etc/change")), contents(filepath.Join(root2, "opt/new/f")))
	}
	if _, err := os.Lstat(filepath.Join(root2, "etc/gone")); err == nil {
		t.Error("a deleted file is in generation 2")
	}
	if ents, _ := os.ReadDir(filepath.Join(root2, "usr/lib/dir")); len(ents) != 1 || ents[0].Name() != "g" {
		t.Errorf("the replaced directory holds %v", ents)
	}
	if inode(t, filepath.Join(root2, "etc/keep")) != inode(t, filepath.Join(root1, "etc/keep")) ||
		inode(t, filepath.Join(root2, "bin/busybox")) != inode(t, filepath.Join(root1, "bin/busybox")) {
		t.Error("unchanged files are copies, not shared")
	}
	if inode(t, filepath.Join(st.BootDir("toy", 2), "initrd.img")) != inode(t, filepath.Join(st.BootDir("toy", 1), "initrd.img")) {
		t.Error("boot files not shared though the kernel did not change")
	}
	// Nothing of overlayfs is left in the tree.
	filepath.WalkDir(root2, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeCharDevice != 0 {
			t.Errorf("a whiteout left at %s", p)
		}
		return nil
	})
	if cur, _ := st.Current("toy"); cur != 2 {
		t.Errorf("current is %d", cur)
	}
	var meta Meta
	json.Unmarshal([]byte(contents(filepath.Join(st.GenDir("toy", 2), "image.json"))), &meta)
	if meta.Parent != 1 || meta.Changed == 0 || !strings.Contains(meta.Update, "echo new") {
		t.Errorf("image.json: %+v", meta)
	}
	if m, _ := filepath.Glob(filepath.Join(st.ImagesDir(), "toy", ".build-*")); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
}

// TestUpdateNeverWritesTheMaster: the chroot sees the master's resolver
// (apt needs it) but cannot write it, and the preparation steps run with
// none of the chroot's mounts in place: a step writing /etc/resolv.conf or
// /dev once wrote the master's own files through the bind mounts.
func TestUpdateNeverWritesTheMaster(t *testing.T) {
	st, _ := toyImage(t)
	master := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(master, []byte("nameserver 192.0.2.53\n"), 0o644)
	old := hostResolvConf
	hostResolvConf = master
	t.Cleanup(func() { hostResolvConf = old })
	devFile := "/dev/bootd-update-test"
	os.Remove(devFile)
	prepareUpdated = func(root string, _ Settings) ([]string, error) {
		if err := write(root, "etc/resolv.conf", "# the image's own\n", 0o644); err != nil {
			return nil, err
		}
		return nil, write(root, "dev/bootd-update-test", "x", 0o644)
	}
	_, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Run: []string{"echo nameserver 192.0.2.99 > /etc/resolv.conf"}})
	if err == nil {
		t.Error("a command wrote the master's resolv.conf without an error")
	}
	gen, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Run: []string{"cat /etc/resolv.conf > /etc/seen-resolver"}})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(master); string(b) != "nameserver 192.0.2.53\n" {
		t.Errorf("the master's resolv.conf is now %q", b)
	}
	if _, err := os.Stat(devFile); err == nil {
		os.Remove(devFile)
		t.Errorf("a step wrote the master's /dev")
	}
	root := st.RootDir("toy", gen)
	if got := contents(filepath.Join(root, "etc/seen-resolver")); got != "nameserver 192.0.2.53\n" {
		t.Errorf("the chroot saw the resolver %q, want the master's", got)
	}
	if got := contents(filepath.Join(root, "etc/resolv.conf")); got != "# the image's own\n" {
		t.Errorf("the generation's resolv.conf: %q", got)
	}
}

// TestFailedUpdateLeavesNothing: a command that fails leaves no
// generation, no build directory, no mount, and current where it was; the
// number it took is not given again.
func TestFailedUpdateLeavesNothing(t *testing.T) {
	st, _ := toyImage(t)
	if _, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Run: []string{"echo half > /etc/keep2", "false"}}); err == nil {
		t.Fatal("a failing command made a generation")
	}
	if _, err := os.Stat(st.GenDir("toy", 2)); err == nil {
		t.Error("generation 2 exists")
	}
	if m, _ := filepath.Glob(filepath.Join(st.ImagesDir(), "toy", ".build-*")); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
	if mounts := contents("/proc/self/mountinfo"); strings.Contains(mounts, st.ImagesDir()) {
		t.Errorf("a mount left behind:\n%s", mounts)
	}
	if cur, _ := st.Current("toy"); cur != 1 {
		t.Errorf("current is %d", cur)
	}
	gen, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Run: []string{"echo ok > /etc/ok"}})
	if err != nil || gen != 3 {
		t.Errorf("next update: generation %d, %v (2 was taken by the failed one)", gen, err)
	}
	if cur, _ := st.Current("toy"); cur != 1 {
		t.Errorf("--no-publish moved current to %d", cur)
	}
}

// TestListCountsSharedBlocksOnceAndGC: an update's generation costs only
// what changed; gc keeps the current generation and those nodes run.
func TestListCountsSharedBlocksOnceAndGC(t *testing.T) {
	st, root1 := toyImage(t)
	big := make([]byte, 4<<20)
	os.WriteFile(filepath.Join(root1, "usr/lib/big"), big, 0o644)
	for range 2 {
		if _, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Run: []string{"echo more >> /etc/keep"}}); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := List(st)
	if err != nil || len(infos) != 3 {
		t.Fatalf("list: %v %v", infos, err)
	}
	if infos[0].NewBytes < 4<<20 || infos[1].NewBytes > 1<<20 || infos[2].NewBytes > 1<<20 {
		t.Errorf("new bytes per generation: %d %d %d", infos[0].NewBytes, infos[1].NewBytes, infos[2].NewBytes)
	}
	// Generation 1 is run by a node: kept; 2 is neither current nor run.
	running := func(name string, gen int) []string {
		if gen == 1 {
			return []string{"node01"}
		}
		return nil
	}
	removed, err := GC(st, "toy", 0, running)
	if err != nil || len(removed) != 1 || removed[0] != 2 {
		t.Errorf("gc removed %v, %v; want [2]", removed, err)
	}
	if contents(filepath.Join(root1, "etc/keep")) != "keep\n" {
		t.Error("gc or update changed generation 1")
	}
	if gens, _ := st.Generations("toy"); len(gens) != 2 {
		t.Errorf("generations left: %v", gens)
	}
}

// TestDiff: what an update brought, by package and by path.
func TestDiff(t *testing.T) {
	st, root1 := toyImage(t)
	status := "Package: base-files\nStatus: install ok installed\nVersion: 13.8\n\nPackage: oldpkg\nStatus: install ok installed\nVersion: 1\n\n"
	os.MkdirAll(filepath.Join(root1, "var/lib/dpkg"), 0o755)
	os.WriteFile(filepath.Join(root1, "var/lib/dpkg/status"), []byte(status), 0o644)
	next := "Package: base-files\nStatus: install ok installed\nVersion: 13.9\n\nPackage: hello\nStatus: install ok installed\nVersion: 2.10-5\n\n"
	if _, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Run: []string{
		"echo '" + next + "' > /var/lib/dpkg/status", "echo new > /etc/change", "rm /etc/gone", "echo x > /etc/added",
	}}); err != nil {
		t.Fatal(err)
	}
	d, err := DiffGenerations(st, "toy", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(d.Packages, "|"); got != "~ base-files 13.8 -> 13.9|+ hello 2.10-5|- oldpkg 1" {
		t.Errorf("packages: %s", got)
	}
	if got := strings.Join(d.Files, "|"); got != "A etc/added|M etc/change|D etc/gone|M var/lib/dpkg/status" {
		t.Errorf("files: %s", got)
	}
}

// TestUpdateWithNewKernelMakesNewInitrd: an update that brings a new
// kernel gets boot files of its own, made by the initrd generator from the
// new tree; the running generation's stay as they were.
func TestUpdateWithNewKernelMakesNewInitrd(t *testing.T) {
	st, _ := toyImage(t)
	var gotRoot, sawKernel string
	initrd := func(root, bootDir string) (string, error) {
		gotRoot = root
		sawKernel = contents(filepath.Join(root, "boot/vmlinuz-6.99-new"))
		os.MkdirAll(bootDir, 0o755)
		os.WriteFile(filepath.Join(bootDir, "vmlinuz"), []byte("new kernel"), 0o644)
		return "6.99-new", os.WriteFile(filepath.Join(bootDir, "initrd.img"), []byte("new initrd"), 0o644)
	}
	// An update that changes nothing of the kernel shares the boot files.
	gen, err := Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Initrd: initrd, Run: []string{"echo x > /etc/x"}})
	if err != nil {
		t.Fatal(err)
	}
	if gotRoot != "" || contents(filepath.Join(st.BootDir("toy", gen), "initrd.img")) != "initrd" {
		t.Fatalf("an update without a new kernel made an initrd (root %q)", gotRoot)
	}
	gen, err = Update(context.Background(), st, UpdateOptions{Name: "toy", Publish: true, Initrd: initrd,
		Run: []string{"mkdir -p /boot /lib/modules/6.99-new && echo k > /boot/vmlinuz-6.99-new && echo dep > /lib/modules/6.99-new/modules.dep"}})
	if err != nil {
		t.Fatal(err)
	}
	if gotRoot == "" || sawKernel != "k\n" {
		t.Errorf("the initrd generator was not given the new tree (root %q)", gotRoot)
	}
	if contents(filepath.Join(st.BootDir("toy", gen), "initrd.img")) != "new initrd" ||
		contents(filepath.Join(st.BootDir("toy", gen), "vmlinuz")) != "new kernel" {
		t.Error("the new generation lacks its new boot files")
	}
	if contents(filepath.Join(st.BootDir("toy", 1), "initrd.img")) != "initrd" || contents(filepath.Join(st.BootDir("toy", 1), "vmlinuz")) != "kernel" {
		t.Error("generation 1's boot files changed")
	}
	var meta Meta
	json.Unmarshal([]byte(contents(filepath.Join(st.GenDir("toy", gen), "image.json"))), &meta)
	if meta.Kernel != "6.99-new" {
		t.Errorf("image.json kernel %q", meta.Kernel)
	}
}

package nfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A copy of a generation on another directory, made hours later, with a
// name of the tree linked from outside it, serves the same handles and
// attributes: what a second master pulling the generation needs.
func TestFingerprintIsTheTreesOwn(t *testing.T) {
	fx := makeFixture(t, false)
	want, err := Fingerprint("demo", 1, fx.root)
	if err != nil {
		t.Fatal(err)
	}
	copyDir := filepath.Join(fastTempDir(t), "root")
	if out, err := exec.Command("cp", "-a", fx.root, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	// What differs on another master: ctime and atime (the copy was just
	// made; read it too), disk usage, directory sizes, and links to the
	// files from other generations.
	os.ReadFile(filepath.Join(copyDir, "etc/hostname"))
	os.Chtimes(filepath.Join(copyDir, "etc/hostname"), time.Now().Add(time.Hour), time.Time{})
	if err := os.Link(filepath.Join(copyDir, "etc/hostname"), filepath.Join(filepath.Dir(copyDir), "outside")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ { // grow a directory on disk, then shrink it back
		p := filepath.Join(copyDir, "tmp", "junk"+string(rune('a'+i%26))+string(rune('a'+i/26)))
		os.WriteFile(p, nil, 0o644)
		os.Remove(p)
	}
	mt := time.Unix(1700000000, 123456789)
	os.Chtimes(filepath.Join(copyDir, "tmp"), mt, mt)
	os.Chtimes(filepath.Join(fx.root, "tmp"), mt, mt)
	if want, err = Fingerprint("demo", 1, fx.root); err != nil {
		t.Fatal(err)
	}
	got, err := Fingerprint("demo", 1, copyDir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("the copy's fingerprint %s, the original's %s", got, want)
	}
	if other, _ := Fingerprint("demo", 2, copyDir); other == want {
		t.Error("another generation number gives the same handles")
	}
	// What a node would see: a mode, an owner, a time, a symlink target.
	for _, change := range []func(root string) error{
		func(r string) error { return syscall.Chmod(filepath.Join(r, "bin/wall"), 0o755) },
		func(r string) error {
			return os.Chtimes(filepath.Join(r, "data/big"), mt, mt.Add(time.Nanosecond))
		},
		func(r string) error {
			os.Remove(filepath.Join(r, "etc/rel"))
			return os.Symlink("../bin/wall", filepath.Join(r, "etc/rel"))
		},
		func(r string) error { return os.Remove(filepath.Join(r, "data/deep/er/third-link")) },
	} {
		if err := change(copyDir); err != nil {
			t.Fatal(err)
		}
		got, err := Fingerprint("demo", 1, copyDir)
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			t.Errorf("a change a node would see left the fingerprint as it was")
		}
		want = got
	}
}

// nlink counts the names in the tree, not those other generations give
// the same inode.
func TestNlinkCountsNamesInTheTree(t *testing.T) {
	fx := makeFixture(t, false)
	if err := os.Link(filepath.Join(fx.root, "bin/sudo"), filepath.Join(fx.state, "elsewhere")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(fx.root, "etc/hostname"), filepath.Join(fx.state, "elsewhere2")); err != nil {
		t.Fatal(err)
	}
	tr, err := buildTree("demo", 1, fx.root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"bin/sudo": 3, "etc/hostname": 1, "bin": 2, "data": 3, "": 2 + 7} // bin etc tmp usr dev run data
	for path, n := range want {
		i, ok := uint32(0), true
		if path != "" {
			i, ok = tr.walkAny(path)
		}
		if !ok {
			t.Fatalf("%s not in the tree", path)
		}
		if got := tr.e(i).attr.nlink; got != n {
			t.Errorf("%s: nlink %d, want %d", path, got, n)
		}
	}
}

func (t *tree) walkAny(path string) (uint32, bool) {
	var i uint32
	for _, n := range strings.Split(path, "/") {
		c, ok := t.lookup(i, n)
		if !ok {
			return 0, false
		}
		i = c
	}
	return i, true
}

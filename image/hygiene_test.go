package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bootd/bootd/store"
)

// bootable writes what a received generation needs to be served.
func bootable(ctx context.Context, work string) error {
	for _, f := range []string{"root/etc/hostname", "boot/vmlinuz", "boot/initrd.img"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(work, f)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(work, f), []byte(f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TestFailedFirstBuildLeavesNoTrace: the first generation of an image
// that fails (numbered or pulled under its own number) leaves no
// images/NAME/ behind, and does not use up generation 1; a failed later
// one leaves the image as it was.
func TestFailedFirstBuildLeavesNoTrace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("receiving needs root")
	}
	ctx := context.Background()
	st := store.New(t.TempDir())
	boom := errors.New("the network went away")
	fail := func(context.Context, string) error { return boom }
	for _, gen := range []int{0, 7} {
		if _, err := Receive(ctx, st, ReceiveOptions{Name: "fresh", Gen: gen, Fill: fail, Publish: true}); !errors.Is(err, boom) {
			t.Fatalf("failing receive (gen %d): %v", gen, err)
		}
		if _, err := os.Lstat(filepath.Join(st.ImagesDir(), "fresh")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed first receive (gen %d) left images/fresh: %v %v", gen, err, entries(t, filepath.Join(st.ImagesDir(), "fresh")))
		}
		if names, _ := st.Images(); len(names) != 0 {
			t.Errorf("images after a failed first build: %v", names)
		}
	}
	g, err := Receive(ctx, st, ReceiveOptions{Name: "fresh", Fill: bootable, Publish: true})
	if err != nil || g != 1 {
		t.Fatalf("first successful receive: generation %d, %v; want 1 (the failed one was never seen)", g, err)
	}
	before := entries(t, filepath.Join(st.ImagesDir(), "fresh"))
	if _, err := Receive(ctx, st, ReceiveOptions{Name: "fresh", Fill: fail, Publish: true}); !errors.Is(err, boom) {
		t.Fatalf("failing later receive: %v", err)
	}
	if after := entries(t, filepath.Join(st.ImagesDir(), "fresh")); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("a failed later build changed images/fresh: %v, was %v", after, before)
	}
	if gens, _ := st.Generations("fresh"); len(gens) != 1 || gens[0] != 1 {
		t.Errorf("generations after a failed later build: %v", gens)
	}
	if cur, _ := st.Current("fresh"); cur != 1 {
		t.Errorf("current after a failed later build: %d", cur)
	}
}

// TestFailedBuildLeavesNoTrace: the same through a real bootstrap that
// fails (a mirror nothing listens on).
func TestFailedBuildLeavesNoTrace(t *testing.T) {
	needBuildTools(t)
	st := store.New(t.TempDir())
	_, err := Build(context.Background(), st, BuildOptions{Name: "nomirror", Suite: "bookworm", Mirror: "http://127.0.0.1:9/debian", Publish: true})
	if err == nil {
		t.Fatal("a build from a dead mirror succeeded")
	}
	if _, err := os.Lstat(filepath.Join(st.ImagesDir(), "nomirror")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed first build left images/nomirror: %v %v", err, entries(t, filepath.Join(st.ImagesDir(), "nomirror")))
	}
}

func deadPID(t *testing.T) string {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	return strconv.Itoa(p.Pid)
}

// TestCleanStale: gc deletes what dead processes left, and nothing else:
// not a build in progress, not what an admin put there, not through a
// mount, not what a leftover symlink points at.
func TestCleanStale(t *testing.T) {
	st := store.New(t.TempDir())
	img := filepath.Join(st.ImagesDir(), "img")
	os.MkdirAll(st.RootDir("img", 1), 0o755)
	keep := filepath.Join(st.RootDir("img", 1), "keep")
	os.WriteFile(keep, []byte("x"), 0o644)
	dead, live := deadPID(t), strconv.Itoa(os.Getpid())
	stale := []string{
		filepath.Join(img, ".build-2-"+dead),
		filepath.Join(img, ".rm-1-"+dead),
		filepath.Join(img, ".current."+dead+".tmp"),
		filepath.Join(st.ImagesDir(), ".rm-old-"+dead),
	}
	kept := []string{filepath.Join(img, ".build-3-"+live), filepath.Join(img, "stray"), st.GenDir("img", 1)}
	for _, d := range []string{stale[0], stale[1], stale[3], kept[0], kept[1]} {
		os.MkdirAll(filepath.Join(d, "root", "etc"), 0o755)
	}
	os.Symlink("1", stale[2]) // a publish that died: a link to generation 1
	removed, err := CleanStale(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != len(stale) {
		t.Errorf("removed %d, want %d: %+v", len(removed), len(stale), removed)
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", p, err)
		}
	}
	for _, p := range append(kept, keep) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was deleted: %v", p, err)
		}
	}
	if probs, _ := st.Problems(); len(probs) != 1 || probs[0].Path != kept[1] {
		t.Errorf("problems after the clean-up: %+v, want the stray directory only", probs)
	}
}

// TestCleanStaleRefusesMounts: a leftover removal with a filesystem
// mounted inside is left, named in the error, the mount's files intact.
func TestCleanStaleRefusesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	st := store.New(t.TempDir())
	trash := filepath.Join(st.ImagesDir(), "img", ".rm-1-"+deadPID(t))
	mp := filepath.Join(trash, "root", "home")
	os.MkdirAll(mp, 0o755)
	if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(mp, syscall.MNT_DETACH)
	precious := filepath.Join(mp, "user-file")
	os.WriteFile(precious, []byte("keep me"), 0o644)
	if _, err := CleanStale(st); err == nil || !strings.Contains(err.Error(), "mounted inside") {
		t.Errorf("cleaning a leftover with a mount inside: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(precious); string(b) != "keep me" {
		t.Error("the mounted filesystem's file is gone")
	}
}

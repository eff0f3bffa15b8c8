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

// TestRemoveImage: a whole image goes only when no node runs any of its
// generations (or forced), never through a mount or with a build in
// progress, and a rebuilt image continues its numbering.
func TestRemoveImage(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "state")
	os.Symlink(real, link) // a symlinked state_dir must not hide a mount
	st := store.New(link)
	for g := 1; g <= 3; g++ {
		if err := bootable(context.Background(), st.GenDir("img", g)); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(st.RootDir("img", g), "home"), 0o755)
	}
	st.NewGeneration("img", 0) // the record says 4: a number handed out whose build failed
	if err := st.Publish("img", 3); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(st.RootDir("other", 1), 0o755)
	outside := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(outside, []byte("keep"), 0o644)
	os.Symlink(outside, filepath.Join(st.RootDir("img", 2), "etc-link"))
	running := map[int][]string{1: {"node07"}}
	inUse := func(name string, gen int) []string {
		if name != "img" {
			t.Errorf("asked about %s", name)
		}
		return running[gen]
	}
	present := func() bool { _, err := os.Lstat(filepath.Join(real, "images", "img")); return err == nil }

	if _, err := RemoveImage(st, "img", false, inUse); err == nil || !strings.Contains(err.Error(), "node07") {
		t.Errorf("removing an image a node runs: %v, want a refusal naming node07", err)
	}
	if gens, _ := st.Generations("img"); len(gens) != 3 {
		t.Errorf("a refused removal left generations %v", gens)
	}
	build := st.BuildDir("img", 5)
	os.MkdirAll(build, 0o755)
	if _, err := RemoveImage(st, "img", true, inUse); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("removing an image being built: %v, want a refusal", err)
	}
	os.Remove(build)
	if os.Geteuid() == 0 {
		mp := filepath.Join(real, "images/img/1/root/home")
		if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(mp, "user-file"), []byte("keep me"), 0o644)
		_, err := RemoveImage(st, "img", true, inUse)
		if err == nil || !strings.Contains(err.Error(), "mounted inside") {
			t.Errorf("removing an image with a mount inside: %v, want a refusal", err)
		}
		if b, _ := os.ReadFile(filepath.Join(mp, "user-file")); string(b) != "keep me" || !present() {
			t.Error("a refused removal deleted something")
		}
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	removed, err := RemoveImage(st, "img", true, inUse)
	if err != nil || len(removed) != 3 {
		t.Fatalf("forced removal: %v %v", removed, err)
	}
	if present() {
		t.Errorf("images/img is still there: %v", entries(t, filepath.Join(real, "images", "img")))
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Error("a symlink in the image was followed")
	}
	if names, _ := st.Images(); len(names) != 1 || names[0] != "other" {
		t.Errorf("images after removing img: %v", names)
	}
	if probs, _ := st.Problems(); len(probs) != 0 {
		t.Errorf("the removal left problems: %+v", probs)
	}
	if _, err := RemoveImage(st, "img", false, inUse); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("removing it again: %v, want ErrNotFound", err)
	}
	// Nodes may hold NFS handles of img/1..3: the next img is 5.
	if g, err := st.NewGeneration("img", 0); err != nil || g != 5 {
		t.Errorf("first generation of the rebuilt image: %d %v, want 5", g, err)
	}
}

// TestRollbackNeedsBootFiles: rollback moves current as publish does,
// with the same refusal of a generation nodes could not boot.
func TestRollbackNeedsBootFiles(t *testing.T) {
	st := store.New(t.TempDir())
	os.MkdirAll(st.RootDir("img", 1), 0o755) // made before its initrd
	if err := bootable(context.Background(), st.GenDir("img", 2)); err != nil {
		t.Fatal(err)
	}
	if err := st.Publish("img", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := Rollback(st, "img"); err == nil || !strings.Contains(err.Error(), "bootd initrd build --image img --generation 1") {
		t.Errorf("rolling back to a generation without boot files: %v", err)
	}
	if cur, _ := st.Current("img"); cur != 2 {
		t.Errorf("current moved to %d", cur)
	}
}

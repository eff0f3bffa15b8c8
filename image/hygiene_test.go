package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
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

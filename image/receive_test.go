package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootd/bootd/store"
)

// A received generation appears whole under the number it was given, or
// not at all; a number handed out here before is refused.
func TestReceive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	st := store.New(t.TempDir())
	fill := func(ctx context.Context, work string) error {
		for _, f := range []string{"root/etc/hostname", "boot/vmlinuz", "boot/initrd.img"} {
			os.MkdirAll(filepath.Dir(filepath.Join(work, f)), 0o755)
			if err := os.WriteFile(filepath.Join(work, f), []byte(f), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	failCheck := errors.New("fingerprint differs")
	_, err := Receive(context.Background(), st, ReceiveOptions{Name: "demo", Gen: 7, Fill: fill, Publish: true,
		Check: func(string) error { return failCheck }})
	if !errors.Is(err, failCheck) {
		t.Fatalf("a failed check: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(st.ImagesDir(), "demo")); len(ents) != 0 {
		t.Errorf("a failed receive left %v", ents)
	}
	// A failed pull can be tried again: it never took its number.
	if g, err := Receive(context.Background(), st, ReceiveOptions{Name: "demo", Gen: 7, Fill: fill}); err != nil || g != 7 {
		t.Errorf("receiving 7 after a failure: %d %v", g, err)
	}
	if _, err := Receive(context.Background(), st, ReceiveOptions{Name: "demo", Gen: 6, Fill: fill}); !errors.Is(err, store.ErrUsed) {
		t.Errorf("claiming 6 after 7: %v", err)
	}
	os.RemoveAll(st.GenDir("demo", 7))
	if _, err := Receive(context.Background(), st, ReceiveOptions{Name: "demo", Gen: 7, Fill: fill}); !errors.Is(err, store.ErrUsed) {
		t.Errorf("claiming a removed 7 again: %v", err)
	}
	g, err := Receive(context.Background(), st, ReceiveOptions{Name: "demo", Gen: 9, Fill: fill, Publish: true})
	if err != nil || g != 9 {
		t.Fatalf("receiving 9: %d %v", g, err)
	}
	if cur, _ := st.Current("demo"); cur != 9 {
		t.Errorf("current %d, want 9", cur)
	}
	// Without boot files nodes could not boot it: refused.
	_, err = Receive(context.Background(), st, ReceiveOptions{Name: "demo", Fill: func(ctx context.Context, work string) error {
		return os.MkdirAll(filepath.Join(work, "root"), 0o755)
	}})
	if err == nil {
		t.Error("received a generation without a kernel")
	}
	if gens, _ := st.Generations("demo"); len(gens) != 1 {
		t.Errorf("generations %v, want [9]", gens)
	}
}

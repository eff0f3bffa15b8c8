package store

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestGenerationsAndPublish(t *testing.T) {
	s := New(t.TempDir())
	if names, err := s.Images(); err != nil || len(names) != 0 {
		t.Fatalf("empty store: %v %v", names, err)
	}
	for _, g := range []int{1, 2, 10} {
		if err := os.MkdirAll(s.RootDir("demo", g), 0o755); err != nil {
			t.Fatal(err)
		}
		withBoot(t, s, "demo", g)
	}
	os.MkdirAll(filepath.Join(s.ImagesDir(), "demo", "3"), 0o755)     // no root: not a generation
	os.MkdirAll(filepath.Join(s.ImagesDir(), "demo", "07"), 0o755)    // not canonical
	os.MkdirAll(filepath.Join(s.ImagesDir(), "demo", "tmp.x"), 0o755) // a build in progress
	gens, err := s.Generations("demo")
	if err != nil || len(gens) != 3 || gens[0] != 1 || gens[2] != 10 {
		t.Fatalf("Generations = %v, %v", gens, err)
	}
	if _, err := s.Current("demo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Current before publish: %v", err)
	}
	if err := s.Publish("demo", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("demo", 10); err != nil {
		t.Fatal(err)
	}
	if g, err := s.Current("demo"); err != nil || g != 10 {
		t.Fatalf("Current = %d, %v", g, err)
	}
	if l, _ := os.Readlink(filepath.Join(s.ImagesDir(), "demo", "current")); l != "10" {
		t.Errorf("current link is %q, want the relative \"10\"", l)
	}
	if err := s.Publish("demo", 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("publishing a generation without a root: %v", err)
	}
	if g, _ := s.Current("demo"); g != 10 {
		t.Errorf("a failed publish moved current to %d", g)
	}
	if err := s.Publish("Bad/Name", 1); err == nil {
		t.Error("publishing under an invalid name succeeded")
	}
	ents, _ := os.ReadDir(filepath.Join(s.ImagesDir(), "demo"))
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".tmp" {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"demo", "bookworm-hpc", "a", "node.v2", "x_1"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "-x", "A", "a/b", "a b", "current\x00", string(make([]byte, 64))} {
		if ValidName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestGenerationNumbersNeverReused: build 3, roll back, `image rm img 3`,
// build again: the new generation is 4, not 3 again (servers key their
// caches and handles on the number).
func TestGenerationNumbersNeverReused(t *testing.T) {
	s := New(t.TempDir())
	for want := 1; want <= 3; want++ {
		g, err := s.NewGeneration("img", 0)
		if err != nil || g != want {
			t.Fatalf("NewGeneration = %d, %v; want %d", g, err, want)
		}
		os.MkdirAll(s.RootDir("img", g), 0o755)
	}
	os.RemoveAll(s.GenDir("img", 3))
	os.RemoveAll(s.GenDir("img", 2))
	if g, err := s.NewGeneration("img", 0); err != nil || g != 4 {
		t.Errorf("after removing 2 and 3: NewGeneration = %d, %v; want 4", g, err)
	}
	// A build in progress the caller knows of (floor) is passed too.
	if g, _ := s.NewGeneration("img", 9); g != 10 {
		t.Errorf("with generation 9 building: %d, want 10", g)
	}
	// Generations present from before the high-water file existed.
	os.MkdirAll(s.RootDir("other", 7), 0o755)
	if g, _ := s.NewGeneration("other", 0); g != 8 {
		t.Errorf("with generation 7 present and no record: %d, want 8", g)
	}
	// Concurrent allocations never share a number.
	seen := make(chan int, 20)
	for i := 0; i < 20; i++ {
		go func() {
			g, err := s.NewGeneration("busy", 0)
			if err != nil {
				t.Error(err)
			}
			seen <- g
		}()
	}
	got := map[int]bool{}
	for i := 0; i < 20; i++ {
		g := <-seen
		if got[g] {
			t.Errorf("generation %d handed out twice", g)
		}
		got[g] = true
	}
}

// A pulled generation keeps its number, and only a number never handed
// out here can be claimed.
func TestClaimGeneration(t *testing.T) {
	s := New(t.TempDir())
	if err := s.ClaimGeneration("demo", 5, 0); err != nil {
		t.Fatal(err)
	}
	for _, g := range []int{5, 4, 1} {
		if err := s.ClaimGeneration("demo", g, 0); !errors.Is(err, ErrUsed) {
			t.Errorf("claiming %d after 5: %v, want ErrUsed", g, err)
		}
	}
	if err := s.ClaimGeneration("demo", 7, 7); !errors.Is(err, ErrUsed) {
		t.Errorf("claiming 7 with a build of 7 in progress: %v", err)
	}
	if g, err := s.NewGeneration("demo", 0); err != nil || g != 6 {
		t.Errorf("next after a claimed 5: %d %v, want 6", g, err)
	}
	if err := s.ClaimGeneration("demo", 0, 0); err == nil {
		t.Error("claimed generation 0")
	}
}

// The record of numbers handed out outlives the image's directory, an
// older store's record inside it is honoured, and a number given back is
// handed out again only if nothing came after it.
func TestGenerationRecord(t *testing.T) {
	s := New(t.TempDir())
	for want := 1; want <= 2; want++ {
		if g, err := s.NewGeneration("img", 0); err != nil || g != want {
			t.Fatalf("NewGeneration = %d, %v; want %d", g, err, want)
		}
	}
	if err := os.RemoveAll(filepath.Join(s.ImagesDir(), "img")); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.NewGeneration("img", 0); g != 3 {
		t.Errorf("after the image's directory went: %d, want 3", g)
	}
	// An older store: the record beside the generations.
	os.MkdirAll(filepath.Join(s.ImagesDir(), "old"), 0o755)
	os.WriteFile(filepath.Join(s.ImagesDir(), "old", ".highest-generation"), []byte("41\n"), 0o644)
	if g, _ := s.NewGeneration("old", 0); g != 42 {
		t.Errorf("with an old record of 41: %d, want 42", g)
	}
	if _, err := os.Stat(filepath.Join(s.ImagesDir(), "old", ".highest-generation")); !os.IsNotExist(err) {
		t.Errorf("the old record is still in the image's directory: %v", err)
	}
	// Given back: the next build takes it again.
	if err := s.ReturnGeneration("img", 3); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.NewGeneration("img", 0); g != 3 {
		t.Errorf("after giving 3 back: %d, want 3", g)
	}
	// Not given back when a later number was handed out, nor when the
	// generation exists.
	s.NewGeneration("img", 0) // 4
	s.ReturnGeneration("img", 3)
	if g, _ := s.NewGeneration("img", 0); g != 5 {
		t.Errorf("3 given back after 4 was handed out: next is %d, want 5", g)
	}
	os.MkdirAll(s.RootDir("img", 5), 0o755)
	s.ReturnGeneration("img", 5)
	if g, _ := s.NewGeneration("img", 0); g != 6 {
		t.Errorf("5 exists and was given back: next is %d, want 6", g)
	}
	// The first number given back leaves no record at all.
	g, _ := s.NewGeneration("fresh", 0)
	if err := s.ReturnGeneration("fresh", g); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(s.ImagesDir(), ".highest-generation", "fresh")); !os.IsNotExist(err) {
		t.Errorf("a record of fresh is left: %v", err)
	}
}

// deadPID is a process ID that no process has: a child that has exited
// and been waited for.
func deadPID(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	return p.Pid
}

// TestProblems: what Images and Generations skip without a word is named,
// and only the work of dead processes is marked safe to delete.
func TestProblems(t *testing.T) {
	s := New(t.TempDir())
	img := filepath.Join(s.ImagesDir(), "img")
	os.MkdirAll(s.RootDir("img", 1), 0o755)
	os.MkdirAll(s.BootDir("img", 1), 0o755)
	os.WriteFile(filepath.Join(s.BootDir("img", 1), "vmlinuz"), []byte("k"), 0o644)
	os.WriteFile(filepath.Join(s.BootDir("img", 1), "initrd.img"), []byte("i"), 0o644)
	os.Symlink("3", filepath.Join(img, "current")) // generation 3 was removed by hand
	dead, live := deadPID(t), os.Getpid()
	want := map[string]bool{ // path below images/ -> stale
		"img/current":                         false,
		"img/2":                               false, // no root/
		"img/07":                              false,
		"img/notes.txt":                       false,
		"img/.build-4-" + itoa(dead):          true,
		"img/.rm-1-" + itoa(dead):             true,
		"img/.current." + itoa(dead) + ".tmp": true,
		"Upper":                               false,
		".rm-gone-" + itoa(dead):              true,
		"empty":                               false,
		"nocur/1":                             false, // current, without boot files
	}
	os.MkdirAll(filepath.Join(img, "2"), 0o755)
	os.MkdirAll(filepath.Join(img, "07", "root"), 0o755)
	os.WriteFile(filepath.Join(img, "notes.txt"), nil, 0o644)
	os.MkdirAll(filepath.Join(img, ".build-4-"+itoa(dead), "root"), 0o755)
	os.MkdirAll(filepath.Join(img, ".rm-1-"+itoa(dead)), 0o755)
	os.Symlink("1", filepath.Join(img, ".current."+itoa(dead)+".tmp"))
	os.MkdirAll(filepath.Join(img, ".build-5-"+itoa(live)), 0o755) // a build in progress: fine
	os.MkdirAll(filepath.Join(s.ImagesDir(), "Upper"), 0o755)
	os.MkdirAll(filepath.Join(s.ImagesDir(), ".rm-gone-"+itoa(dead)), 0o755)
	os.MkdirAll(filepath.Join(s.ImagesDir(), "empty"), 0o755)
	os.MkdirAll(s.RootDir("nocur", 1), 0o755)
	os.Symlink("1", filepath.Join(s.ImagesDir(), "nocur", "current"))
	s.NewGeneration("ok", 0) // the record of numbers is the store's own
	os.MkdirAll(s.RootDir("ok", 1), 0o755)

	probs, err := s.Problems()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range probs {
		rel, _ := filepath.Rel(s.ImagesDir(), p.Path)
		if p.What == "" {
			t.Errorf("%s: no description", rel)
		}
		if _, dup := got[rel]; dup {
			t.Errorf("%s named twice", rel)
		}
		got[rel] = p.Stale
		if strings.HasPrefix(rel, "img/") && p.Image != "img" {
			t.Errorf("%s: image %q", rel, p.Image)
		}
	}
	for rel, stale := range want {
		if g, ok := got[rel]; !ok {
			t.Errorf("%s not named", rel)
		} else if g != stale {
			t.Errorf("%s: stale %v, want %v", rel, g, stale)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s named, and is no problem", rel)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// Retire records the highest number an image had, from an older store's
// record too, before its directory goes.
func TestRetire(t *testing.T) {
	s := New(t.TempDir())
	os.MkdirAll(s.RootDir("old", 3), 0o755)
	os.WriteFile(filepath.Join(s.ImagesDir(), "old", ".highest-generation"), []byte("9\n"), 0o644)
	os.MkdirAll(s.RootDir("new", 4), 0o755) // generations from before any record
	for name, want := range map[string]int{"old": 10, "new": 5} {
		trash, err := s.Retire(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(s.ImagesDir(), name)); !os.IsNotExist(err) {
			t.Errorf("%s: the image's directory is still there: %v", name, err)
		}
		if fi, err := os.Stat(trash); err != nil || !fi.IsDir() || filepath.Dir(trash) != s.ImagesDir() {
			t.Errorf("%s: moved to %s: %v", name, trash, err)
		}
		if g, err := s.NewGeneration(name, 0); err != nil || g != want {
			t.Errorf("%s built again: generation %d %v, want %d", name, g, err, want)
		}
	}
	if _, err := s.Retire("nope"); err == nil {
		t.Error("retired an image that does not exist")
	}
}

// withBoot gives a generation the boot files nodes need.
func withBoot(t *testing.T, s *Store, name string, gen int) {
	t.Helper()
	os.MkdirAll(s.BootDir(name, gen), 0o755)
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(s.BootDir(name, gen), f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Publishing a generation nodes could not boot is refused, saying what
// is missing and how to make it.
func TestPublishNeedsBootFiles(t *testing.T) {
	s := New(t.TempDir())
	os.MkdirAll(s.RootDir("img", 1), 0o755)
	withBoot(t, s, "img", 1)
	if err := s.Publish("img", 1); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(s.RootDir("img", 2), 0o755)
	err := s.Publish("img", 2)
	if err == nil || !strings.Contains(err.Error(), "has no boot/vmlinuz: nodes could not boot it") || !strings.Contains(err.Error(), "bootd initrd build --image img --generation 2") {
		t.Errorf("publishing a generation without boot files: %v", err)
	}
	os.MkdirAll(s.BootDir("img", 2), 0o755)
	os.WriteFile(filepath.Join(s.BootDir("img", 2), "vmlinuz"), []byte("k"), 0o644)
	os.WriteFile(filepath.Join(s.BootDir("img", 2), "initrd.img"), nil, 0o644)
	if err := s.Publish("img", 2); err == nil || !strings.Contains(err.Error(), "an empty boot/initrd.img") {
		t.Errorf("publishing a generation with an empty initrd: %v", err)
	}
	if g, _ := s.Current("img"); g != 1 {
		t.Errorf("a refused publish moved current to %d", g)
	}
}

// Package store is the image store: the on-disk contract between the image
// builder, the initrd generator and the TFTP and NFS servers.
//
//	STATE/images/NAME/GEN/root/            the node's root tree
//	STATE/images/NAME/GEN/boot/vmlinuz     its kernel
//	STATE/images/NAME/GEN/boot/initrd.img  the initrd bootd generated for it
//	STATE/images/NAME/current -> GEN       the generation new boots get
//
// GEN is a positive integer, never used twice for one image, even after
// the whole image was removed (STATE/images/.highest-generation/NAME keeps
// the highest ever handed out). A published generation is never modified: nodes
// that booted it keep reading it while newer ones are built and published.
// current is a relative symlink replaced atomically by rename, so a reader
// sees the old or the new generation and never a missing link. Nothing here
// is cached: every call reads the disk, so servers see a newly published
// generation without a restart.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotFound says that an image or generation does not exist.
var ErrNotFound = errors.New("not found")

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether name can be an image name: lower-case letters,
// digits, '.', '_' and '-', starting with a letter or digit, at most 63 bytes.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("image name %q: want lower-case letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)", name)
	}
	return nil
}

// Store is an image store rooted at a state directory.
type Store struct {
	dir string // STATE
}

// New returns the store under stateDir. It does not touch the disk.
func New(stateDir string) *Store { return &Store{dir: stateDir} }

// ImagesDir is STATE/images.
func (s *Store) ImagesDir() string { return filepath.Join(s.dir, "images") }

// GenDir is STATE/images/NAME/GEN.
func (s *Store) GenDir(name string, gen int) string {
	return filepath.Join(s.ImagesDir(), name, strconv.Itoa(gen))
}

// RootDir is the root tree of a generation.
func (s *Store) RootDir(name string, gen int) string {
	return filepath.Join(s.GenDir(name, gen), "root")
}

// BootDir holds a generation's vmlinuz and initrd.img.
func (s *Store) BootDir(name string, gen int) string {
	return filepath.Join(s.GenDir(name, gen), "boot")
}

// Images lists the image names in the store, sorted.
func (s *Store) Images() ([]string, error) {
	ents, err := os.ReadDir(s.ImagesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && ValidName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Generations lists the generations of an image that have a root tree, in
// ascending order.
func (s *Store) Generations(name string) ([]int, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(s.ImagesDir(), name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("listing generations of %q: %w", name, err)
	}
	var gens []int
	for _, e := range ents {
		g, ok := parseGen(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		if st, err := os.Stat(s.RootDir(name, g)); err == nil && st.IsDir() {
			gens = append(gens, g)
		}
	}
	sort.Ints(gens)
	return gens, nil
}

func parseGen(s string) (int, bool) {
	g, err := strconv.Atoi(s)
	if err != nil || g <= 0 || strconv.Itoa(g) != s {
		return 0, false
	}
	return g, true
}

// Current returns the generation that new boots of the image get.
func (s *Store) Current(name string) (int, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	link, err := os.Readlink(filepath.Join(s.ImagesDir(), name, "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("image %q has no current generation: %w", name, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("reading current generation of %q: %w", name, err)
	}
	g, ok := parseGen(link)
	if !ok {
		return 0, fmt.Errorf("image %q: current points at %q, want a generation number", name, link)
	}
	return g, nil
}

// Has reports whether the generation exists with a root tree.
func (s *Store) Has(name string, gen int) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if gen <= 0 {
		return fmt.Errorf("generation %d of %q: want a positive number", gen, name)
	}
	st, err := os.Stat(s.RootDir(name, gen))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image %q generation %d: %w", name, gen, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("image %q generation %d: %w", name, gen, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("image %q generation %d: root is not a directory", name, gen)
	}
	return nil
}

// Publish makes gen the current generation of the image. The link is
// written beside the old one and renamed over it, so readers never see it
// missing.
func (s *Store) Publish(name string, gen int) error {
	if err := s.Has(name, gen); err != nil {
		return err
	}
	dir := filepath.Join(s.ImagesDir(), name)
	tmp := filepath.Join(dir, fmt.Sprintf(".current.%d.tmp", os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Symlink(strconv.Itoa(gen), tmp); err != nil {
		return fmt.Errorf("publishing %s generation %d: %w", name, gen, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("publishing %s generation %d: %w", name, gen, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// The highest generation number ever handed out is recorded per image in
// STATE/images/.highest-generation/NAME. Numbers name caches in every
// server (NFS indexes and handles, TFTP's boot files, a node's pinned
// generation): a number used again after `image rm` would let a server
// answer for the old tree with the new one's name. So the next number is
// one past the highest ever used, not past the highest present, and the
// record lives outside the image's directory so that it outlives the
// removal of the whole image. Older stores kept it in
// STATE/images/NAME/.highest-generation; it is still read, and moved on
// the next allocation.
const (
	highDir    = ".highest-generation"
	legacyHigh = ".highest-generation"
)

func (s *Store) highPath(name string) string { return filepath.Join(s.ImagesDir(), highDir, name) }

// NewGeneration allocates a generation number for image name that was
// never allocated before and is above floor (the caller's own view of
// numbers in use, such as builds in progress). Concurrent callers get
// distinct numbers: the allocation holds an flock on the records'
// directory.
func (s *Store) NewGeneration(name string, floor int) (int, error) {
	return s.allocate(name, floor, 0)
}

// ErrUsed says that a generation number was handed out before.
var ErrUsed = errors.New("generation number already handed out")

// ClaimGeneration allocates the number gen itself, for a generation that
// was made elsewhere and keeps its number here (a pull from a registry:
// NFS handles name the generation, so a replica serves it under the same
// number). It fails with ErrUsed unless gen is above every number this
// store ever handed out and above floor.
func (s *Store) ClaimGeneration(name string, gen, floor int) error {
	if gen <= 0 {
		return fmt.Errorf("generation %d of %q: want a positive number", gen, name)
	}
	_, err := s.allocate(name, floor, gen)
	return err
}

// ReturnGeneration gives back gen, handed out by NewGeneration or
// ClaimGeneration to a generation that was never made (its build
// failed): no server can have seen the number, so the next build may
// take it again, and an image whose first build failed leaves no record.
// It does nothing if a later number was handed out since, or if the
// generation's directory exists.
func (s *Store) ReturnGeneration(name string, gen int) error {
	return s.locked(name, func(high int) (int, error) {
		if high != gen {
			return high, nil
		}
		if _, err := os.Lstat(s.GenDir(name, gen)); !errors.Is(err, fs.ErrNotExist) {
			return high, err
		}
		return gen - 1, nil
	})
}

// allocate hands out want, or the next number when want is 0.
func (s *Store) allocate(name string, floor, want int) (gen int, err error) {
	err = s.locked(name, func(high int) (int, error) {
		if gens, err := s.Generations(name); err == nil && len(gens) > 0 {
			high = max(high, gens[len(gens)-1])
		}
		gen = max(high, floor) + 1
		if want > 0 {
			if want < gen {
				return 0, fmt.Errorf("generation %d of %q: this store handed out numbers up to %d: %w", want, name, gen-1, ErrUsed)
			}
			gen = want
		}
		return gen, nil
	})
	if err != nil {
		return 0, fmt.Errorf("allocating a generation of %q: %w", name, err)
	}
	return gen, nil
}

// locked runs update on the image's recorded highest number (0 if none)
// under the records' lock, and records what it returns (none for 0).
func (s *Store) locked(name string, update func(high int) (int, error)) error {
	if err := ValidName(name); err != nil {
		return err
	}
	dir := filepath.Join(s.ImagesDir(), highDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", dir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)
	legacy := filepath.Join(s.ImagesDir(), name, legacyHigh)
	high := 0
	for _, p := range []string{s.highPath(name), legacy} {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		g, ok := parseGen(strings.TrimSpace(string(b)))
		if !ok {
			return fmt.Errorf("%s holds %q, want a number: fix or remove it by hand", p, b)
		}
		high = max(high, g)
	}
	next, err := update(high)
	if err != nil {
		return err
	}
	if next == high {
		return nil
	}
	if next <= 0 {
		if err := os.Remove(s.highPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	} else if err := writeSynced(dir, s.highPath(name), strconv.Itoa(next)+"\n"); err != nil {
		return err
	}
	if err := os.Remove(legacy); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return d.Sync()
}

// writeSynced replaces path by a file holding data, written beside it and
// renamed over it once on disk.
func writeSynced(dir, path, data string) error {
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	err := os.WriteFile(tmp, []byte(data), 0o644)
	if err == nil {
		var f *os.File
		if f, err = os.Open(tmp); err == nil {
			err = f.Sync()
			f.Close()
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

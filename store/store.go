// Package store is the image store: the on-disk contract between the image
// builder, the initrd generator and the TFTP and NFS servers.
//
//	STATE/images/NAME/GEN/root/            the node's root tree
//	STATE/images/NAME/GEN/boot/vmlinuz     its kernel
//	STATE/images/NAME/GEN/boot/initrd.img  the initrd bootd generated for it
//	STATE/images/NAME/current -> GEN       the generation new boots get
//	STATE/images/.highest-generation/NAME  the highest GEN ever handed out
//	STATE/images/NAME/.build-GEN-PID/      a generation being made
//	STATE/images/NAME/.rm-GEN-PID/         a generation being deleted
//	STATE/images/.rm-NAME-PID/             a whole image being deleted
//
// GEN is a positive integer, never used twice for one image, even after
// the whole image was removed. Hidden work directories belong to a running
// process; a dead one's are leftovers that Problems names and marks Stale.
// current only ever names a generation with its boot files. A published generation is never modified: nodes
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
// missing. Every path that moves current comes here (publish, rollback,
// a build, update, pull or import that publishes), so this is where a
// generation nodes could not boot is refused.
func (s *Store) Publish(name string, gen int) error {
	if err := s.Has(name, gen); err != nil {
		return err
	}
	if err := CheckBoot(s.GenDir(name, gen)); err != nil {
		return fmt.Errorf("image %q generation %d has %w; make them with `bootd initrd build --image %s --generation %d`, then publish", name, gen, err, name, gen)
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
// never allocated before, is above every build in progress in the image's
// directory, and is above floor (the caller's own view of numbers in use). Concurrent callers get
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

// Retire moves an image's directory out of the servers' sight, to
// RemovedDir, for the caller to delete, after recording the highest
// generation number it ever had (present, being built, or handed out), so
// that an image built again under the name continues the numbering: nodes
// may still hold NFS handles naming the old generations.
func (s *Store) Retire(name string) (string, error) {
	err := s.locked(name, func(high int) (int, error) {
		if gens, err := s.Generations(name); err == nil && len(gens) > 0 {
			high = max(high, gens[len(gens)-1])
		}
		return max(high, s.building(name)), nil
	})
	if err != nil {
		return "", fmt.Errorf("removing image %q: recording its generation numbers: %w", name, err)
	}
	trash := s.RemovedDir(name)
	if err := os.Rename(filepath.Join(s.ImagesDir(), name), trash); err != nil {
		return "", fmt.Errorf("removing image %q: %w", name, err)
	}
	return trash, nil
}

// Working lists the work in progress in an image's directory: builds
// and removals whose process is alive.
func (s *Store) Working(name string) []string {
	ents, _ := os.ReadDir(filepath.Join(s.ImagesDir(), name))
	var out []string
	for _, e := range ents {
		if m := workRE.FindStringSubmatch(e.Name()); m != nil && alive(m[3]) {
			out = append(out, e.Name())
		}
	}
	return out
}

// allocate hands out want, or the next number when want is 0.
func (s *Store) allocate(name string, floor, want int) (gen int, err error) {
	err = s.locked(name, func(high int) (int, error) {
		if gens, err := s.Generations(name); err == nil && len(gens) > 0 {
			high = max(high, gens[len(gens)-1])
		}
		gen = max(high, floor, s.building(name)) + 1
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
	high, recorded, hasLegacy := 0, 0, false
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
		if p == legacy {
			hasLegacy = true
		} else {
			recorded = g
		}
		high = max(high, g)
	}
	next, err := update(high)
	if err != nil {
		return err
	}
	if next == recorded && !hasLegacy {
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

// Work directories are hidden entries of an image's directory that a
// process owns while it runs: .build-GEN-PID, a generation being made (GEN
// 0 while its number is not claimed yet), and .rm-GEN-PID, one being
// deleted; and, beside the images, .rm-NAME-PID, a whole image being
// deleted. Servers never look at them; the PID tells a dead owner's
// leftovers from work in progress.
var (
	workRE      = regexp.MustCompile(`^\.(build|rm)-(\d+)-(\d+)$`)
	removedRE   = regexp.MustCompile(`^\.rm-(.+)-(\d+)$`)
	tempRE      = regexp.MustCompile(`^\..*\.(\d+)\.tmp$`)
	workBuild   = "build"
	workRemoval = "rm"
)

// BuildDir is the hidden directory in which this process makes
// generation gen of an image (0: a generation whose number is claimed
// when it is complete).
func (s *Store) BuildDir(name string, gen int) string {
	return filepath.Join(s.ImagesDir(), name, fmt.Sprintf(".%s-%d-%d", workBuild, gen, os.Getpid()))
}

// TrashDir is where this process moves a generation to delete it: out of
// the servers' sight at once, deleted at leisure.
func (s *Store) TrashDir(name string, gen int) string {
	return filepath.Join(s.ImagesDir(), name, fmt.Sprintf(".%s-%d-%d", workRemoval, gen, os.Getpid()))
}

// RemovedDir is where this process moves a whole image to delete it.
func (s *Store) RemovedDir(name string) string {
	return filepath.Join(s.ImagesDir(), fmt.Sprintf(".%s-%s-%d", workRemoval, name, os.Getpid()))
}

// building is the highest generation number being built in the image's
// directory, by any process.
func (s *Store) building(name string) int {
	ents, _ := os.ReadDir(filepath.Join(s.ImagesDir(), name))
	high := 0
	for _, e := range ents {
		if m := workRE.FindStringSubmatch(e.Name()); m != nil && m[1] == workBuild {
			g, _ := strconv.Atoi(m[2])
			high = max(high, g)
		}
	}
	return high
}

// alive reports whether a process with this PID exists (a PID reused by
// another process counts: its work is left alone).
func alive(pidText string) bool {
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	return pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH
}

// CheckBoot says whether the generation in dir (an image's GEN, or a
// generation being made) has what nodes boot: boot/vmlinuz and
// boot/initrd.img, non-empty.
func CheckBoot(dir string) error {
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := CheckBootFile(dir, f); err != nil {
			return err
		}
	}
	return nil
}

// CheckBootFile is CheckBoot's rule for one file of dir's boot/
// ("vmlinuz" or "initrd.img"): a regular file that is not empty.
func CheckBootFile(dir, f string) error {
	st, err := os.Stat(filepath.Join(dir, "boot", f))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no boot/%s: nodes could not boot it", f)
	case err != nil:
		return fmt.Errorf("no usable boot/%s (%v): nodes could not boot it", f, err)
	case !st.Mode().IsRegular() || st.Size() == 0:
		return fmt.Errorf("an empty boot/%s: nodes could not boot it", f)
	}
	return nil
}

// A Problem is an entry of the store that is not an image, a generation,
// a current link, the record of numbers or work in progress, or a current
// link new boots cannot follow: what a crash, a failed removal or a hand
// left behind, which Images and Generations skip without a word.
type Problem struct {
	Image string // "" for an entry beside the images
	Path  string
	What  string // for the admin: what it is and what to do about it
	// Stale is set for the leftovers of a process that is gone: an
	// unfinished build, removal or publish. Nothing refers to them and
	// they are safe to delete (`image gc`).
	Stale bool
	// Build is set for an unfinished build: mounts its bootstrap left
	// inside (/proc, /dev) are bootd's own to undo.
	Build bool
}

// Problems lists every Problem in the store, by path.
func (s *Store) Problems() ([]Problem, error) {
	ents, err := os.ReadDir(s.ImagesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	var out []Problem
	for _, e := range ents {
		n, p := e.Name(), filepath.Join(s.ImagesDir(), e.Name())
		switch m := removedRE.FindStringSubmatch(n); {
		case n == highDir:
			out = append(out, tempProblems(p)...)
		case m != nil:
			if !alive(m[2]) {
				out = append(out, Problem{Path: p, Stale: true,
					What: fmt.Sprintf("an unfinished removal of image %s (process %s is gone)", m[1], m[2])})
			}
		case ValidName(n) != nil:
			out = append(out, Problem{Path: p, What: "not an image (names are lower-case letters, digits, '.', '_' and '-'): bootd ignores it"})
		case !e.IsDir():
			out = append(out, Problem{Path: p, What: "not a directory: bootd ignores it"})
		default:
			probs, err := s.imageProblems(n)
			if err != nil {
				return nil, err
			}
			out = append(out, probs...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// tempProblems names the temporary files of dead processes in dir.
func tempProblems(dir string) []Problem {
	ents, _ := os.ReadDir(dir)
	var out []Problem
	for _, e := range ents {
		if m := tempRE.FindStringSubmatch(e.Name()); m != nil && !alive(m[1]) {
			out = append(out, Problem{Path: filepath.Join(dir, e.Name()), Stale: true,
				What: fmt.Sprintf("a temporary file of process %s, which is gone", m[1])})
		}
	}
	return out
}

func (s *Store) imageProblems(name string) ([]Problem, error) {
	dir := filepath.Join(s.ImagesDir(), name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing generations of %q: %w", name, err)
	}
	var out []Problem
	add := func(entry string, stale bool, format string, args ...any) {
		out = append(out, Problem{Image: name, Path: filepath.Join(dir, entry), Stale: stale, What: fmt.Sprintf(format, args...)})
	}
	gens := map[int]bool{}
	for _, e := range ents {
		n := e.Name()
		if g, ok := parseGen(n); ok && e.IsDir() {
			if s.Has(name, g) == nil {
				gens[g] = true
			} else {
				add(n, false, "not a generation: it has no root/ directory; bootd ignores it")
			}
			continue
		}
		if n == "current" || n == legacyHigh {
			continue
		}
		if m := workRE.FindStringSubmatch(n); m != nil {
			if alive(m[3]) {
				continue // in progress
			}
			if m[1] == workBuild {
				add(n, true, "an unfinished build of generation %s (process %s is gone)", m[2], m[3])
				out[len(out)-1].Build = true
			} else {
				add(n, true, "an unfinished removal of generation %s (process %s is gone)", m[2], m[3])
			}
			continue
		}
		if m := tempRE.FindStringSubmatch(n); m != nil {
			if !alive(m[1]) {
				add(n, true, "a temporary file of process %s, which is gone", m[1])
			}
			continue
		}
		add(n, false, "not part of the store: bootd ignores it")
	}
	if fi, err := os.Lstat(filepath.Join(dir, "current")); err == nil {
		cur, err := s.Current(name)
		switch {
		case fi.Mode()&fs.ModeSymlink == 0:
			add("current", false, "not a symlink: new boots of %s fail; make one with bootd image publish %s GEN", name, name)
		case err != nil || !gens[cur]:
			link, _ := os.Readlink(filepath.Join(dir, "current"))
			add("current", false, "points at %q, which is not a generation: new boots of %s fail; bootd image publish %s GEN", link, name, name)
		default:
			if err := CheckBoot(s.GenDir(name, cur)); err != nil {
				add(strconv.Itoa(cur), false, "the current generation has %v; make them with bootd initrd build --image %s --generation %d", err, name, cur)
			}
		}
	} else if len(ents) == 0 {
		out = append(out, Problem{Image: name, Path: dir, What: fmt.Sprintf("holds no generation: bootd image rm %s removes it", name)})
	}
	return out, nil
}

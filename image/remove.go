package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/store"
)

// Deleting a tree that has something mounted inside deletes the mounted
// filesystem's files: an admin's chroot with the master's /home bound into
// a generation, or a bootstrap killed with /proc and /dev mounted in its
// chroot. Every delete here resolves the path first (a symlinked state_dir
// must not hide a mount from the check), looks for mounts below it, and
// then walks the tree without ever crossing into another filesystem.

// removeBuild deletes an unfinished build. Mounts left inside it by the
// bootstrap are unmounted first (they are bootd's own), and nothing is
// deleted while a mount remains.
func removeBuild(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("resolving %s: %w", dir, err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		mps := mountsBelow(real)
		if len(mps) == 0 {
			return removeSameFS(real)
		}
		for _, mp := range mps {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	return fmt.Errorf("%s still has mounts inside (%s): left in place; unmount them and remove it by hand", dir, strings.Join(mountsBelow(real), ", "))
}

// removeGeneration deletes a published generation's directory. A mount
// inside it is not bootd's to undo: it is refused, named in the error.
func removeGeneration(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", dir, err)
	}
	if mps := mountsBelow(real); len(mps) > 0 {
		return fmt.Errorf("%s has filesystems mounted inside (%s): unmount them first; nothing was deleted", dir, strings.Join(mps, ", "))
	}
	return removeSameFS(real)
}

// removeSameFS deletes dir and everything below it that is on dir's
// filesystem. It never follows a symlink, and it stops with an error at a
// directory on another filesystem (a mount that appeared after the check)
// rather than delete inside it.
func removeSameFS(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return os.Remove(dir)
	}
	mnt, err := mountID(dir)
	if err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return removeDir(dir, mnt)
}

// mountID names the mount a path is on. The device number would not do: a
// bind mount of a directory of the same filesystem (/home bound into an
// image on the same disk) has the same one.
func mountID(p string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("the kernel does not tell mount IDs (statx STATX_MNT_ID, Linux 5.8)")
	}
	return stx.Mnt_id, nil
}

func removeDir(dir string, mnt uint64) error {
	id, err := mountID(dir)
	if err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	if id != mnt {
		return fmt.Errorf("removing %s: something is mounted there; left in place", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	var firstErr error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() { // from the directory entry's type: a symlink is not a dir
			err = removeDir(p, mnt)
		} else {
			err = os.Remove(p)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return firstErr
	}
	return os.Remove(dir)
}

// mountsBelow lists mount points at or below dir (a resolved path),
// deepest first.
func mountsBelow(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CleanStale deletes the leftovers of processes that are gone (the
// store's Problems marked Stale: unfinished builds, removals and
// publishes) and returns them. Nothing is deleted through a mount: an
// unfinished build's own mounts are undone first, and a removal with a
// filesystem mounted inside is left in place and named in the error.
func CleanStale(st *store.Store) ([]store.Problem, error) {
	return cleanStale(st, "")
}

// cleanStale is CleanStale for one image, or every one ("").
func cleanStale(st *store.Store, image string) ([]store.Problem, error) {
	probs, err := st.Problems()
	if err != nil {
		return nil, err
	}
	var done []store.Problem
	var errs []error
	for _, p := range probs {
		if !p.Stale || (image != "" && p.Image != image) {
			continue
		}
		var err error
		switch fi, lerr := os.Lstat(p.Path); {
		case lerr != nil:
			err = lerr
		case !fi.IsDir():
			// A leftover symlink names a generation: remove the link,
			// never resolve it.
			err = os.Remove(p.Path)
		case p.Build:
			err = removeBuild(p.Path)
		default:
			err = removeGeneration(p.Path)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		done = append(done, p)
	}
	return done, errors.Join(errs...)
}

// RemoveImage deletes a whole image: every generation, current, and its
// directory. It refuses while nodes run any of its generations (inUse,
// as for one generation) unless force, while a build or removal of it is
// in progress, and while a filesystem is mounted anywhere inside; it
// never follows a symlink. The store keeps the highest number the image
// had, so an image built again under the name starts above it. It
// returns the generations removed.
func RemoveImage(st *store.Store, name string, force bool, inUse func(name string, gen int) []string) ([]int, error) {
	gens, err := st.Generations(name)
	if err != nil {
		return nil, err
	}
	images, err := filepath.EvalSymlinks(st.ImagesDir())
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", st.ImagesDir(), err)
	}
	real := filepath.Join(images, name)
	if fi, err := os.Lstat(real); err != nil {
		return nil, fmt.Errorf("removing image %q: %w", name, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("image %q: %s is not a directory (a symlink?): bootd deletes nothing through it; remove it by hand", name, real)
	}
	if !force {
		var running []string
		for _, g := range gens {
			if nodes := inUse(name, g); len(nodes) > 0 {
				running = append(running, fmt.Sprintf("generation %d: %s", g, strings.Join(nodes, ", ")))
			}
		}
		if len(running) > 0 {
			return nil, fmt.Errorf("image %q: nodes run it (%s); boot them into another image first, or --force", name, strings.Join(running, "; "))
		}
	}
	if work := st.Working(name); len(work) > 0 {
		return nil, fmt.Errorf("image %q: work in progress (%s); wait for it to end; nothing was deleted", name, strings.Join(work, ", "))
	}
	if mps := mountsBelow(real); len(mps) > 0 {
		return nil, fmt.Errorf("image %q has filesystems mounted inside (%s): unmount them first; nothing was deleted", name, strings.Join(mps, ", "))
	}
	trash, err := st.Retire(name)
	if err != nil {
		return nil, err
	}
	if err := removeGeneration(trash); err != nil {
		return gens, fmt.Errorf("image %q is gone for the servers, but deleting its files: %w (bootd image gc retries)", name, err)
	}
	return gens, nil
}

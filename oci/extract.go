package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An extractor writes tar streams from a registry, which may be hostile,
// into one directory. No name leaves it: every parent directory is opened
// beneath the directory with symlinks refused (openat2), every object is
// made relative to that parent without following a symlink, and nothing
// that exists is overwritten but a directory. Directory attributes are
// applied by finish, deepest first, once everything below is written.
type extractor struct {
	dirFd int
	top   map[string]bool // allowed first path elements; nil: any
	dirs  map[string]*tar.Header
	// minFree stops the extraction while the filesystem has less free
	// space than this: a layer cannot fill the disk bootd serves from.
	minFree uint64
	written int64
	// mkParents makes directories a foreign image's tar names only by
	// what is in them (root-owned, 0755).
	mkParents bool
}

func (x *extractor) makeParents(rel string) error {
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		d := strings.Join(parts[:i], "/")
		pfd, base, err := x.parent(d)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		err = unix.Mkdirat(pfd, base, 0o755)
		unix.Close(pfd)
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("%s: making %s: %w", rel, d, err)
		}
	}
	return nil
}

func newExtractor(dir string, top ...string) (*extractor, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	x := &extractor{dirFd: fd, dirs: map[string]*tar.Header{}, minFree: 512 << 20}
	if len(top) > 0 {
		x.top = map[string]bool{}
		for _, t := range top {
			x.top[t] = true
		}
	}
	return x, nil
}

func (x *extractor) close() { unix.Close(x.dirFd) }

// cleanName checks a tar entry's name: relative, no "..", no empty or "."
// elements once cleaned, under an allowed top directory.
func (x *extractor) cleanName(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if n == "" || path.IsAbs(n) || path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") || strings.Contains(n, "\x00") {
		return "", fmt.Errorf("entry %q: not a clean relative path", name)
	}
	if x.top != nil && !x.top[strings.SplitN(n, "/", 2)[0]] {
		return "", fmt.Errorf("entry %q: outside %v", name, keys(x.top))
	}
	return n, nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// parent opens the directory an entry goes in, beneath the extraction
// directory, refusing symlinks at every step.
func (x *extractor) parent(rel string) (int, string, error) {
	d, base := path.Dir(rel), path.Base(rel)
	if d == "." {
		fd, err := unix.Dup(x.dirFd)
		return fd, base, err
	}
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(x.dirFd, d, &how)
	if err != nil {
		return -1, "", fmt.Errorf("opening directory %s: %w (a layer must make a directory before what is in it, and no path may go through a symlink)", d, err)
	}
	return fd, base, nil
}

// extract writes one tar stream.
func (x *extractor) extract(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the layer: %w", err)
		}
		if err := x.entry(h, tr); err != nil {
			return err
		}
	}
}

func (x *extractor) entry(h *tar.Header, r io.Reader) error {
	if x.top == nil && (h.Name == "." || h.Name == "./" || h.Name == "/") {
		return nil // the root itself, in some images
	}
	rel, err := x.cleanName(h.Name)
	if err != nil {
		return err
	}
	if x.mkParents {
		if err := x.makeParents(rel); err != nil {
			return err
		}
	}
	if x.top != nil && x.top[rel] && h.Typeflag != tar.TypeDir {
		return fmt.Errorf("%s: want a directory", rel)
	}
	pfd, base, err := x.parent(rel)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	defer unix.Close(pfd)
	fail := func(err error) error { return fmt.Errorf("%s: %w", rel, err) }
	switch h.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
			return fail(err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fail(errors.New("exists and is not a directory"))
		}
		if h.PAXRecords[paxImplied] == "" {
			x.dirs[rel] = h
		}
		return nil
	case tar.TypeReg, tar.TypeRegA:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fail(err)
		}
		f := os.NewFile(uintptr(fd), rel)
		n, err := io.Copy(f, x.spaceChecked(r, f))
		if err == nil && n != h.Size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			f.Close()
			return fail(err)
		}
		if err := f.Close(); err != nil {
			return fail(err)
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			return fail(err)
		}
	case tar.TypeLink:
		target, err := x.cleanName(h.Linkname)
		if err != nil {
			return fail(fmt.Errorf("hard link: %w", err))
		}
		tfd, tbase, err := x.parent(target)
		if err != nil {
			return fail(err)
		}
		err = unix.Linkat(tfd, tbase, pfd, base, 0)
		unix.Close(tfd)
		if err != nil {
			return fail(fmt.Errorf("hard link to %s: %w", target, err))
		}
		return nil // the inode's attributes came with its first name
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		if err := unix.Mknodat(pfd, base, kind|0o600, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("tar entry type %q is not supported", h.Typeflag))
	}
	return x.attrs(pfd, base, h, rel)
}

// attrs applies owner, mode, extended attributes and times, in the order
// that keeps each: chown clears setuid and file capabilities, so it goes
// first, and the times go last.
func (x *extractor) attrs(pfd int, base string, h *tar.Header, rel string) error {
	fail := func(what string, err error) error { return fmt.Errorf("%s: %s: %w", rel, what, err) }
	if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail("owner", err)
	}
	if h.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, uint32(h.Mode&0o7777), 0); err != nil {
			return fail("mode", err)
		}
	}
	procPath := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
	names := make([]string, 0, len(h.PAXRecords))
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if err := unix.Lsetxattr(procPath, strings.TrimPrefix(k, "SCHILY.xattr."), []byte(h.PAXRecords[k]), 0); err != nil {
			return fail("extended attribute "+strings.TrimPrefix(k, "SCHILY.xattr."), err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail("times", err)
	}
	return nil
}

// finish applies the directories' attributes, deepest first: making
// anything in a directory changes its mtime.
func (x *extractor) finish() error {
	var rels []string
	for r := range x.dirs {
		rels = append(rels, r)
	}
	sort.Slice(rels, func(i, j int) bool {
		di, dj := strings.Count(rels[i], "/"), strings.Count(rels[j], "/")
		if di != dj {
			return di > dj
		}
		return rels[i] < rels[j]
	})
	for _, r := range rels {
		pfd, base, err := x.parent(r)
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		err = x.attrs(pfd, base, x.dirs[r], r)
		unix.Close(pfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// spaceChecked fails a write once the filesystem runs low.
func (x *extractor) spaceChecked(r io.Reader, f *os.File) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		before := x.written
		x.written += int64(n)
		if x.written>>26 != before>>26 { // every 64 MiB
			var fs unix.Statfs_t
			if unix.Fstatfs(int(f.Fd()), &fs) == nil && fs.Bavail*uint64(fs.Bsize) < x.minFree {
				return n, fmt.Errorf("less than %d MiB left on the filesystem: stopped", x.minFree>>20)
			}
		}
		return n, err
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

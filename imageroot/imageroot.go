// Package imageroot opens an image generation's files as its nodes will
// see them, for the image preparation steps and the initrd generator that
// run as root on the master. Every path, and every symlink on the way (an
// absolute one, or one climbing past the top, too), is resolved inside the
// image's root by the kernel (openat2 with RESOLVE_IN_ROOT). Resolved on
// the master instead, a link such as etc/shadow -> /etc/shadow would make a
// preparation step rewrite the master's password file, and
// lib/firmware/x -> /etc/shadow would put it into an initrd that TFTP
// serves to anyone.
package imageroot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is an open image root.
type Root struct{ dir *os.File }

// Open opens the image whose root directory is root.
func Open(root string) (*Root, error) {
	d, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &Root{dir: d}, nil
}

// Close releases the root.
func (r *Root) Close() error { return r.dir.Close() }

// OpenIn opens name with open(2) flags, resolved inside the image.
func (r *Root) OpenIn(name string, flags int) (*os.File, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(int(r.dir.Fd()), name, &how)
	// EAGAIN: a rename elsewhere raced the lookup of a "..".
	for i := 0; i < 16 && errors.Is(err, unix.EAGAIN); i++ {
		fd, err = unix.Openat2(int(r.dir.Fd()), name, &how)
	}
	if errors.Is(err, unix.ENOSYS) {
		return nil, errors.New("resolving paths inside the image needs openat2 (Linux 5.6 or later)")
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/" + strings.TrimPrefix(name, "/"), Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Stat describes name, symlinks followed inside the image.
func (r *Root) Stat(name string) (os.FileInfo, error) {
	h, err := r.OpenIn(name, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Stat()
}

// Open opens a regular file of the image for reading. A FIFO or a device
// behind the name (the image's /dev/zero behind a link) is refused before
// it is opened.
func (r *Root) Open(name string) (*os.File, error) {
	h, err := r.OpenIn(name, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	hs, err := h.Stat()
	if err != nil {
		return nil, err
	}
	at := "/" + strings.TrimPrefix(name, "/")
	if !hs.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in the image: not a regular file (%v)", at, hs.Mode())
	}
	f, err := r.OpenIn(name, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if fs, err := f.Stat(); err != nil || !os.SameFile(hs, fs) {
		f.Close()
		return nil, fmt.Errorf("%s in the image: changed while being opened", at)
	}
	return f, nil
}

// ReadFile reads a regular file of the image.
func (r *Root) ReadFile(name string) ([]byte, error) {
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// ReadDir lists a directory of the image.
func (r *Root) ReadDir(name string) ([]os.DirEntry, error) {
	d, err := r.OpenIn(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir(-1)
}

// MkdirAll makes directory dir (clean, absolute in the image) and its
// parents inside the image, and returns it opened.
func (r *Root) MkdirAll(dir string, mode os.FileMode) (*os.File, error) {
	d, err := r.OpenIn(dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if dir == "/" || !errors.Is(err, os.ErrNotExist) {
		return d, err
	}
	p, err := r.MkdirAll(path.Dir(dir), mode)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	base := path.Base(dir)
	if err := unix.Mkdirat(int(p.Fd()), base, uint32(mode.Perm())); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	// Not followed: what is there is the directory just made, or a link
	// that leads nowhere inside the image, which is refused.
	fd, err := unix.Openat(int(p.Fd()), base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var st unix.Stat_t
		if unix.Fstatat(int(p.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil, fmt.Errorf("%s is a symlink that leads nowhere inside the image", dir)
		}
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

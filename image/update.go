package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/store"
)

// UpdateOptions says how to make the next generation from the current one.
type UpdateOptions struct {
	Name     string
	Install  []string // packages to install with apt
	Upgrade  bool     // apt-get dist-upgrade
	Run      []string // shell commands run in the image, after apt
	Publish  bool
	Settings Settings
	// Initrd generates the initrd into bootDir when the kernel or its
	// modules changed; otherwise the current generation's boot files are
	// shared.
	Initrd   func(root, bootDir string) (kernel string, err error)
	Progress io.Writer
}

// An update never writes to the generation it starts from: nodes are
// running it. The changes are made in an overlay whose lower layer is the
// current generation, and the new generation is then assembled from hard
// links to the current one's files plus the overlay's upper layer moved
// into place. A file the update changed is a new file (overlayfs copies it
// up before the first write), so no shared inode is ever written.
//
// The overlay is mounted without metacopy, redirect_dir and index, so that
// the upper layer holds whole files and plain directories, and its only
// special entries are whiteouts and opaque directories.
const overlayOptions = "metacopy=off,redirect_dir=off,index=off,xino=off"

// prepareUpdated re-runs the preparation on the updated tree (packages may
// bring back what it removed: host keys, an initramfs-tools initrd). A
// variable so that tests on a toy tree can leave it out.
var prepareUpdated = Prepare

// Update makes generation N+1 of an image from its current generation N by
// running apt and commands on top of it, and publishes it if asked. N is
// never written. A failed or interrupted update leaves nothing behind and
// never moves current.
func Update(ctx context.Context, st *store.Store, opt UpdateOptions) (gen int, err error) {
	if os.Geteuid() != 0 {
		return 0, errors.New("image update needs root (overlay mounts, chroot)")
	}
	if len(opt.Install) == 0 && !opt.Upgrade && len(opt.Run) == 0 {
		return 0, errors.New("image update: nothing to do (give --install, --upgrade or --run)")
	}
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bootd image: "+format+"\n", args...) }
	base, err := st.Current(opt.Name)
	if err != nil {
		return 0, err
	}
	baseDir := st.GenDir(opt.Name, base)
	var meta Meta
	if b, err := os.ReadFile(filepath.Join(baseDir, "image.json")); err == nil {
		json.Unmarshal(b, &meta)
	}
	gen, work, err := newBuild(st, opt.Name)
	if err != nil {
		return 0, err
	}
	taken := gen // gen is 0 by the time a failing return runs the defer
	defer abandonUnlessDone(st, opt.Name, &taken, work, &err)
	start := time.Now()
	say("updating %s: generation %d from %d", opt.Name, gen, base)
	upper, merged := filepath.Join(work, "upper"), filepath.Join(work, "merged")
	if err := changeInOverlay(ctx, st.RootDir(opt.Name, base), work, opt, progress); err != nil {
		return 0, err
	}
	say("assembling generation %d: unchanged files shared with generation %d, the changes moved in", gen, base)
	root := filepath.Join(work, "root")
	if err := linkTree(st.RootDir(opt.Name, base), root); err != nil {
		return 0, fmt.Errorf("linking generation %d: %w", base, err)
	}
	changed, err := applyUpper(upper, root)
	if err != nil {
		return 0, fmt.Errorf("moving the changes in: %w", err)
	}
	for _, d := range []string{upper, merged, filepath.Join(work, "ovlwork")} {
		if err := removeSameFS(d); err != nil {
			return 0, err
		}
	}
	boot := filepath.Join(work, "boot")
	if opt.Initrd != nil && kernelChanged(st.RootDir(opt.Name, base), root) {
		say("the kernel or its modules changed: generating the initrd")
		if meta.Kernel, err = opt.Initrd(root, boot); err != nil {
			return 0, fmt.Errorf("generating the initrd: %w", err)
		}
	} else if err := linkTree(st.BootDir(opt.Name, base), boot); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("sharing the boot files: %w", err)
	}
	meta.Name, meta.Generation = opt.Name, gen
	meta.Parent = base
	meta.Update = describeUpdate(opt)
	meta.Changed = changed
	meta.Built = time.Now().UTC().Truncate(time.Second)
	meta.Bytes = treeSize(root)
	meta.Seconds = time.Since(start).Round(time.Second).Seconds()
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(work, "image.json"), b, 0o644); err != nil {
		return 0, err
	}
	if err := os.Rename(work, st.GenDir(opt.Name, gen)); err != nil {
		return 0, fmt.Errorf("finishing the update: %w", err)
	}
	say("updated %s: generation %d in %v, %d paths changed", opt.Name, gen, time.Since(start).Round(100*time.Millisecond), changed)
	if opt.Publish {
		if err := st.Publish(opt.Name, gen); err != nil {
			return gen, err
		}
		say("published: new boots of %s get generation %d; running nodes stay on the one they booted", opt.Name, gen)
	}
	return gen, nil
}

func describeUpdate(opt UpdateOptions) string {
	var w []string
	if opt.Upgrade {
		w = append(w, "upgrade")
	}
	if len(opt.Install) > 0 {
		w = append(w, "install "+strings.Join(opt.Install, ","))
	}
	for _, r := range opt.Run {
		w = append(w, "run "+r)
	}
	return strings.Join(w, "; ")
}

// changeInOverlay mounts lower (read-only) under an overlay in work, with
// what apt needs inside, runs the update there, and unmounts everything,
// whatever happens.
func changeInOverlay(ctx context.Context, lower, work string, opt UpdateOptions, progress io.Writer) (err error) {
	upper, ovl, merged := filepath.Join(work, "upper"), filepath.Join(work, "ovlwork"), filepath.Join(work, "merged")
	for _, d := range []string{upper, ovl, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0,
		"lowerdir="+lower+",upperdir="+upper+",workdir="+ovl+","+overlayOptions); err != nil {
		return fmt.Errorf("mounting the overlay (kernel module overlay): %w", err)
	}
	defer func() {
		if uerr := unix.Unmount(merged, 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting the overlay: %w", uerr)
		}
	}()
	if err := runInChroot(ctx, merged, opt, progress); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// Only with the chroot's mounts gone: the steps write and remove
	// files in the tree, and must never reach the master's /dev or its
	// resolv.conf through a bind mount.
	if _, err := prepareUpdated(merged, opt.Settings); err != nil {
		return fmt.Errorf("preparing the updated image: %w", err)
	}
	return nil
}

// hostResolvConf is the master's resolver config, which apt in the chroot
// reads (a variable for tests).
var hostResolvConf = "/etc/resolv.conf"

// runInChroot runs apt and the commands in the tree at merged, with what
// they need mounted inside, and unmounts all of it, whatever happens.
func runInChroot(ctx context.Context, merged string, opt UpdateOptions, progress io.Writer) error {
	var mounted []string
	defer func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if uerr := unix.Unmount(mounted[i], 0); uerr != nil {
				unix.Unmount(mounted[i], unix.MNT_DETACH)
			}
		}
	}()
	for _, m := range []struct {
		src, target, fstype string
		flags               uintptr
	}{
		{"proc", "proc", "proc", 0},
		{"sysfs", "sys", "sysfs", unix.MS_RDONLY},
		{"/dev", "dev", "", unix.MS_BIND},
		{"devpts", "dev/pts", "devpts", 0},
		{"tmpfs", "run", "tmpfs", 0},
		{"tmpfs", "tmp", "tmpfs", 0},
	} {
		t := filepath.Join(merged, m.target)
		if st, err := os.Lstat(t); err != nil || !st.IsDir() {
			continue
		}
		if err := unix.Mount(m.src, t, m.fstype, m.flags, ""); err != nil {
			return fmt.Errorf("mounting %s in the image: %w", m.target, err)
		}
		mounted = append(mounted, t)
	}
	// apt needs the master's name servers; bound over the image's file so
	// that nothing of the master's lands in the generation, and read-only,
	// so that nothing in the chroot writes the master's file.
	if st, err := os.Lstat(filepath.Join(merged, "etc/resolv.conf")); err == nil && st.Mode().IsRegular() {
		t := filepath.Join(merged, "etc/resolv.conf")
		if err := unix.Mount(hostResolvConf, t, "", unix.MS_BIND, ""); err == nil {
			mounted = append(mounted, t)
			if err := unix.Mount("", t, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("making the master's resolv.conf read-only in the image: %w", err)
			}
		}
	}
	// No service starts in the image because a package was installed.
	policy := filepath.Join(merged, "usr/sbin/policy-rc.d")
	if _, err := os.Lstat(policy); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
			return err
		}
		defer os.Remove(policy)
	}
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: merged}
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "HOME=/root"}
		cmd.Stdout, cmd.Stderr = progress, progress
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	if len(opt.Install) > 0 || opt.Upgrade {
		if err := run("apt-get", "-q", "update"); err != nil {
			return err
		}
		if opt.Upgrade {
			if err := run("apt-get", "-q", "-y", "dist-upgrade"); err != nil {
				return err
			}
		}
		if len(opt.Install) > 0 {
			if err := run(append([]string{"apt-get", "-q", "-y", "--no-install-recommends", "install"}, opt.Install...)...); err != nil {
				return err
			}
		}
		if err := run("apt-get", "clean"); err != nil {
			return err
		}
		// The package lists (tens of MiB) are not kept in a generation,
		// as image build leaves none; the directories apt owns stay.
		lists := filepath.Join(merged, "var/lib/apt/lists")
		ents, _ := os.ReadDir(lists)
		for _, e := range ents {
			if !e.IsDir() && e.Name() != "lock" {
				os.Remove(filepath.Join(lists, e.Name()))
			}
		}
	}
	for _, c := range opt.Run {
		if err := run("/bin/sh", "-c", c); err != nil {
			return err
		}
	}
	return nil
}

// linkTree makes dst a copy of src in which every non-directory is a hard
// link to src's: directories are new (their metadata copied), files are
// shared, never copied and never written. It stays on src's filesystem.
func linkTree(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	dev := st.Sys().(*syscall.Stat_t).Dev
	var dirs []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if !d.IsDir() {
			return os.Link(p, target)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		sys := info.Sys().(*syscall.Stat_t)
		if sys.Dev != dev {
			return fmt.Errorf("%s is another filesystem, mounted inside the image", p)
		}
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
		dirs = append(dirs, rel)
		return nil
	})
	if err != nil {
		return err
	}
	// Metadata last, deepest first: a directory's mtime must not change
	// after it is set, and a read-only one must still take its entries.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := copyDirMeta(filepath.Join(src, dirs[i]), filepath.Join(dst, dirs[i])); err != nil {
			return err
		}
	}
	return nil
}

func copyDirMeta(from, to string) error {
	var st unix.Stat_t
	if err := unix.Lstat(from, &st); err != nil {
		return err
	}
	if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := os.Chmod(to, os.FileMode(st.Mode&0o7777)|modeBits(st.Mode)); err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, to, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// modeBits carries setuid, setgid and sticky into an os.FileMode.
func modeBits(m uint32) os.FileMode {
	var f os.FileMode
	if m&unix.S_ISUID != 0 {
		f |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		f |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		f |= os.ModeSticky
	}
	return f
}

// isWhiteout: overlayfs marks a deleted lower entry with a 0/0 character
// device in the upper layer.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isOpaque(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", buf)
	return err == nil && n > 0 && buf[0] == 'y'
}

// applyUpper moves the overlay's upper layer into root (a linkTree copy
// of the lower layer): whiteouts delete, opaque directories replace,
// changed files replace the shared link (unlinked, never written),
// directories merge. It returns how many paths changed.
func applyUpper(upper, root string) (int, error) {
	changed := 0
	var walk func(rel string) error
	walk = func(rel string) error {
		entries, err := os.ReadDir(filepath.Join(upper, rel))
		if err != nil {
			return err
		}
		for _, e := range entries {
			r := filepath.Join(rel, e.Name())
			from, to := filepath.Join(upper, r), filepath.Join(root, r)
			var st unix.Stat_t
			if err := unix.Lstat(from, &st); err != nil {
				return err
			}
			changed++
			switch {
			case isWhiteout(&st):
				if err := removeIfPresent(to); err != nil {
					return err
				}
			case e.IsDir() && !isOpaque(from) && isDir(to):
				if err := walk(r); err != nil {
					return err
				}
				changed-- // the directory itself only holds changes
				if err := copyDirMeta(from, to); err != nil {
					return err
				}
			default:
				if err := removeIfPresent(to); err != nil {
					return err
				}
				if err := os.Rename(from, to); err != nil {
					return err
				}
				if e.IsDir() {
					if err := scrubOverlayMarks(to); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return changed, err
	}
	return changed, copyDirMeta(upper, root)
}

func isDir(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.IsDir()
}

func removeIfPresent(p string) error {
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.IsDir() {
		return removeSameFS(p)
	}
	return os.Remove(p)
}

// scrubOverlayMarks removes, in a directory moved in from the upper
// layer, what only overlayfs means: whiteouts and its xattrs.
func scrubOverlayMarks(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if isWhiteout(&st) {
			return os.Remove(p)
		}
		if d.IsDir() {
			unix.Lremovexattr(p, "trusted.overlay.opaque")
		}
		return nil
	})
}

// kernelChanged reports whether the kernels or module trees differ
// between two roots (by name, size and mtime), which needs a new initrd.
func kernelChanged(a, b string) bool {
	list := func(root string) string {
		var w []string
		for _, pat := range []string{"boot/vmlinuz-*", "lib/modules/*/modules.dep", "usr/lib/modules/*/modules.dep"} {
			m, _ := filepath.Glob(filepath.Join(root, pat))
			for _, f := range m {
				if st, err := os.Stat(f); err == nil {
					rel, _ := filepath.Rel(root, f)
					w = append(w, fmt.Sprintf("%s %d %d", rel, st.Size(), st.ModTime().UnixNano()))
				}
			}
		}
		return strings.Join(w, "\n")
	}
	return list(a) != list(b)
}

package oci

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A generation's tree is cut into layers so that two generations share
// what they share: a registry stores a layer once, and a push uploads only
// layers the registry lacks. Files dpkg says a package owns go into that
// package's layer, so installing or upgrading one package changes its
// layer and the few files everything shares (dpkg's status and lists, the
// linker cache), not the image. Files no package owns go into a layer per
// directory two levels down (etc/ssh, var/lib, ...). The boot files are
// one layer of their own. A layer's bytes depend on nothing but the
// files in it: entries in path order, numeric owners, no user or group
// names, PAX headers with nanosecond mtimes, gzip without a name or time.

// Top-level entries of a generation directory that travel.
const (
	rootDir = "root"
	bootDir = "boot"
)

// An entry is one object of the tree, as found by the walk.
type entry struct {
	rel  string // relative to the generation directory: root/usr/bin/ls
	st   unix.Stat_t
	link string // the first name of its inode in the tree (a hard link), or ""
	// implied is a directory written into a layer only so that the layer
	// can be unpacked on its own; its attributes come from the dirs layer.
	implied bool
}

// dirsKey is the layer of every directory's attributes.
const dirsKey = "dirs"

// paxImplied marks an implied directory's header.
const paxImplied = "BOOTD.implied"

// A layerPlan is one layer: its key and entries in path order, with the
// directories above them.
type layerPlan struct {
	key     string
	entries []*entry
}

// planLayers walks a generation directory and assigns every object to a
// layer. It never follows a symlink.
func planLayers(dir string) ([]layerPlan, error) {
	var all []*entry
	byRel := map[string]*entry{}
	type ino struct{ dev, ino uint64 }
	first := map[ino]*entry{}
	for _, top := range []string{rootDir, bootDir} {
		if _, err := os.Lstat(filepath.Join(dir, top)); errors.Is(err, fs.ErrNotExist) && top == bootDir {
			continue
		}
		err := filepath.WalkDir(filepath.Join(dir, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			e := &entry{rel: filepath.ToSlash(rel)}
			if err := unix.Lstat(p, &e.st); err != nil {
				return err
			}
			if e.st.Mode&unix.S_IFMT == unix.S_IFSOCK {
				return fmt.Errorf("%s: a socket: a generation cannot carry one (remove it from the image)", rel)
			}
			// Hard links: the names an inode has in this tree, whatever
			// other generations link to it (image update shares inodes).
			if e.st.Mode&unix.S_IFMT != unix.S_IFDIR && e.st.Nlink > 1 {
				k := ino{e.st.Dev, e.st.Ino}
				if f, ok := first[k]; ok {
					e.link = f.rel
				} else {
					first[k] = e
				}
			}
			all = append(all, e)
			byRel[e.rel] = e
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", dir, err)
		}
	}
	owner, err := dpkgOwners(filepath.Join(dir, rootDir))
	if err != nil {
		return nil, err
	}
	keyOf := func(e *entry) string {
		if e.rel == bootDir || strings.HasPrefix(e.rel, bootDir+"/") {
			return "boot"
		}
		in := strings.TrimPrefix(strings.TrimPrefix(e.rel, rootDir), "/")
		if pkg, ok := owner[in]; ok {
			return "pkg/" + pkg
		}
		parts := strings.SplitN(path.Dir(in), "/", 3)
		if len(parts) > 2 {
			parts = parts[:2]
		}
		return "dir/" + strings.Join(parts, "/")
	}
	// Every name of an inode goes in one layer: a package's, if dpkg
	// lists any of the names.
	inodeKey := map[string]string{} // first name -> key
	for _, e := range all {
		if e.link == "" {
			continue
		}
		if k := keyOf(e); strings.HasPrefix(k, "pkg/") && !strings.HasPrefix(inodeKey[e.link], "pkg/") {
			inodeKey[e.link] = k
		}
	}
	groups := map[string][]*entry{}
	for _, e := range all {
		k := ""
		lead := e.link
		if lead == "" {
			if _, ok := inodeKey[e.rel]; ok {
				lead = e.rel
			}
		}
		switch {
		case lead != "":
			if k = inodeKey[lead]; k == "" {
				k = keyOf(byRel[lead])
			}
		case e.st.Mode&unix.S_IFMT == unix.S_IFDIR:
			k = dirsKey
		default:
			k = keyOf(e)
		}
		groups[k] = append(groups[k], e)
	}
	var plans []layerPlan
	for k, es := range groups {
		// Each layer carries the directories above its entries, so it can
		// be unpacked on its own, but only their names: their attributes
		// (an mtime that moves whenever a package adds a file) are in the
		// dirs layer alone, or every layer would change with every update.
		seen := map[string]bool{}
		var withDirs []*entry
		for _, e := range es {
			for d := path.Dir(e.rel); d != "." && !seen[d] && k != dirsKey; d = path.Dir(d) {
				seen[d] = true
				withDirs = append(withDirs, &entry{rel: d, implied: true})
			}
			if !seen[e.rel] {
				seen[e.rel] = true
				withDirs = append(withDirs, e)
			}
		}
		sort.Slice(withDirs, func(i, j int) bool { return withDirs[i].rel < withDirs[j].rel })
		plans = append(plans, layerPlan{key: k, entries: withDirs})
	}
	sort.Slice(plans, func(i, j int) bool { return plans[i].key < plans[j].key })
	return plans, nil
}

// dpkgOwners maps each path of the root (relative, without a leading
// slash) to the package whose file list names it, the first package in
// name order when several do. dpkg lists paths as packages ship them
// (/bin/ls on a merged-/usr system whose file is /usr/bin/ls), so
// directory symlinks inside the root are resolved, never leaving it.
func dpkgOwners(root string) (map[string]string, error) {
	lists, _ := filepath.Glob(filepath.Join(root, "var/lib/dpkg/info/*.list"))
	sort.Strings(lists)
	owner := map[string]string{}
	dirLinks := map[string]string{} // resolved directories, cached
	for _, l := range lists {
		pkg := strings.TrimSuffix(filepath.Base(l), ".list")
		if i := strings.IndexByte(pkg, ':'); i >= 0 {
			pkg = pkg[:i]
		}
		f, err := os.Open(l)
		if err != nil {
			return nil, fmt.Errorf("reading dpkg's file lists: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p := strings.Trim(sc.Text(), "/")
			if p == "" || p == "." {
				continue
			}
			p = path.Join(resolveDir(root, path.Dir(p), dirLinks), path.Base(p))
			if _, ok := owner[p]; !ok {
				owner[p] = pkg
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", l, err)
		}
	}
	return owner, nil
}

// resolveDir follows symlinks in a directory path inside root, as a node
// would with root as /; it gives up (returning the path as it was) after
// 40 links or at anything that is not a directory.
func resolveDir(root, dir string, cache map[string]string) string {
	if dir == "." || dir == "" {
		return "."
	}
	if r, ok := cache[dir]; ok {
		return r
	}
	parent := resolveDir(root, path.Dir(dir), cache)
	r := path.Join(parent, path.Base(dir))
	for hops := 0; hops < 40; hops++ {
		target, err := os.Readlink(filepath.Join(root, r))
		if err != nil {
			break
		}
		if path.IsAbs(target) {
			r = path.Clean(strings.TrimPrefix(target, "/"))
		} else {
			r = path.Join(path.Dir(r), target)
		}
		if r == ".." || strings.HasPrefix(r, "../") {
			r = path.Join(parent, path.Base(dir))
			break
		}
	}
	if r == "" {
		r = "."
	}
	cache[dir] = r
	return r
}

// writeLayer writes a layer's tar stream.
func writeLayer(w io.Writer, dir string, p layerPlan) error {
	tw := tar.NewWriter(w)
	for _, e := range p.entries {
		if err := writeEntry(tw, dir, e); err != nil {
			return fmt.Errorf("layer %s: %s: %w", p.key, e.rel, err)
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, dir string, e *entry) error {
	if e.implied {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: e.rel + "/", Mode: 0o755, ModTime: time.Unix(0, 0),
			Format: tar.FormatPAX, PAXRecords: map[string]string{paxImplied: "1"}})
	}
	full := filepath.Join(dir, e.rel)
	st := &e.st
	h := &tar.Header{
		Name:    e.rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: timeOf(st.Mtim),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		h.Typeflag, h.Name = tar.TypeDir, e.rel+"/"
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	case unix.S_IFREG:
		h.Typeflag, h.Size = tar.TypeReg, st.Size
		if e.link != "" {
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.link, 0
		}
	default:
		return fmt.Errorf("file type %#o cannot travel", st.Mode&unix.S_IFMT)
	}
	xattrs, err := readXattrs(full)
	if err != nil {
		return err
	}
	if len(xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		for k, v := range xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return nil
	}
	fd, err := unix.Open(full, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	n, err := io.Copy(tw, io.LimitReader(f, h.Size))
	if err == nil && n != h.Size {
		err = fmt.Errorf("changed while being read (%d of %d bytes)", n, h.Size)
	}
	return err
}

// readXattrs returns an object's extended attributes (file capabilities,
// ACLs, SELinux labels), without following a symlink.
func readXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, fmt.Errorf("listing extended attributes: %w", err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("reading extended attribute %s: %w", name, err)
		}
		v := make([]byte, vsz)
		if vsz, err = unix.Lgetxattr(p, name, v); err != nil {
			return nil, fmt.Errorf("reading extended attribute %s: %w", name, err)
		}
		out[name] = string(v[:vsz])
	}
	return out, nil
}

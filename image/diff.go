package image

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/bootd/bootd/store"
)

// Diff is what one generation brings over another.
type Diff struct {
	// Packages: "+ name version", "- name version", "~ name old -> new".
	Packages []string
	// Files: "A path", "D path", "M path" (content, type or metadata).
	Files []string
}

// DiffGenerations compares two generations of an image: the packages dpkg
// has installed, and every path. Files an update shares (the same inode)
// are the same without being read.
func DiffGenerations(st *store.Store, name string, from, to int) (Diff, error) {
	a, b := st.RootDir(name, from), st.RootDir(name, to)
	for _, r := range []string{a, b} {
		if _, err := os.Stat(r); err != nil {
			return Diff{}, err
		}
	}
	var d Diff
	pa, pb := installed(a), installed(b)
	for p, v := range pb {
		switch old, ok := pa[p]; {
		case !ok:
			d.Packages = append(d.Packages, "+ "+p+" "+v)
		case old != v:
			d.Packages = append(d.Packages, "~ "+p+" "+old+" -> "+v)
		}
	}
	for p, v := range pa {
		if _, ok := pb[p]; !ok {
			d.Packages = append(d.Packages, "- "+p+" "+v)
		}
	}
	sort.Slice(d.Packages, func(i, j int) bool { return d.Packages[i][2:] < d.Packages[j][2:] })
	ta, err := listTree(a)
	if err != nil {
		return d, err
	}
	tb, err := listTree(b)
	if err != nil {
		return d, err
	}
	for p, eb := range tb {
		ea, ok := ta[p]
		switch {
		case !ok:
			d.Files = append(d.Files, "A "+p)
		case !sameEntry(filepath.Join(a, p), filepath.Join(b, p), ea, eb):
			d.Files = append(d.Files, "M "+p)
		}
	}
	for p := range ta {
		if _, ok := tb[p]; !ok {
			d.Files = append(d.Files, "D "+p)
		}
	}
	sort.Slice(d.Files, func(i, j int) bool { return d.Files[i][2:] < d.Files[j][2:] })
	return d, nil
}

// installed reads dpkg's status file: package -> version, installed ones.
func installed(root string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(filepath.Join(root, "var/lib/dpkg/status"))
	if err != nil {
		return out
	}
	defer f.Close()
	var pkg, ver, status string
	flush := func() {
		if pkg != "" && strings.HasSuffix(status, " installed") {
			out[pkg] = ver
		}
		pkg, ver, status = "", "", ""
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "":
			flush()
		case strings.HasPrefix(l, "Package: "):
			pkg = strings.TrimPrefix(l, "Package: ")
		case strings.HasPrefix(l, "Version: "):
			ver = strings.TrimPrefix(l, "Version: ")
		case strings.HasPrefix(l, "Status: "):
			status = strings.TrimPrefix(l, "Status: ")
		}
	}
	flush()
	return out
}

func listTree(root string) (map[string]*syscall.Stat_t, error) {
	out := map[string]*syscall.Stat_t{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = info.Sys().(*syscall.Stat_t)
		return nil
	})
	return out, err
}

func sameEntry(pa, pb string, a, b *syscall.Stat_t) bool {
	if a.Dev == b.Dev && a.Ino == b.Ino {
		return true
	}
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Rdev != b.Rdev {
		return false
	}
	// A directory's size is its filesystem's business; its entries are
	// compared one by one.
	if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return true
	}
	if a.Size != b.Size {
		return false
	}
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		la, _ := os.Readlink(pa)
		lb, _ := os.Readlink(pb)
		return la == lb
	case syscall.S_IFREG:
		return bytes.Equal(hashFile(pa), hashFile(pb))
	}
	return true
}

func hashFile(p string) []byte {
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return h.Sum(nil)
}

package nfs

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"golang.org/x/sys/unix"
)

// A tree is the in-memory index of one published generation. A published
// generation never changes, so everything a client can ask about it except
// file contents and symlink targets is read once, here, and answered from
// memory afterwards: no syscall per GETATTR or LOOKUP, and nothing a client
// sends is ever turned into a filesystem path.
//
// Entries are numbered in breadth-first order with each directory's
// children sorted by name and stored contiguously. That numbering is a
// pure function of the tree's contents, so it is the same after a restart
// and on a second master serving a byte-identical copy; file handles,
// fileids and READDIR cookies are built from it.
type tree struct {
	name string
	gen  int
	id   genID
	fs   billy.Filesystem // osfs BoundOS on the generation's root
	ents []entry

	totalBytes uint64
}

// genID names a generation in file handles: a hash of image name and
// generation number, identical on every master.
type genID [8]byte

func makeGenID(name string, gen int) genID {
	sum := sha256.Sum256([]byte("bootd generation\x00" + name + "\x00" + strconv.Itoa(gen)))
	var id genID
	copy(id[:], sum[:8])
	return id
}

type entry struct {
	name   string
	parent uint32
	first  uint32 // first child (directories)
	nchild uint32
	check  uint64 // hash of the path, guards handles against a changed tree
	attr   fattr
}

// fattr is the on-disk metadata of an object as NFSv3 sends it (fattr3).
type fattr struct {
	typ                 uint32 // ftype3
	mode                uint32 // permission bits including setuid, setgid, sticky
	nlink, uid, gid     uint32
	size, used          uint64
	major, minor        uint32
	fileid              uint64
	atime, mtime, ctime nfstime
}

type nfstime struct{ sec, nsec uint32 }

// ftype3 values (RFC 1813).
const (
	nf3Reg  = 1
	nf3Dir  = 2
	nf3Blk  = 3
	nf3Chr  = 4
	nf3Lnk  = 5
	nf3Sock = 6
	nf3Fifo = 7
)

// buildTree walks root and indexes it. It never follows symlinks and never
// leaves root: it reads directories only through names it found there.
func buildTree(name string, gen int, root string) (*tree, error) {
	st, err := os.Lstat(root)
	if err != nil {
		return nil, fmt.Errorf("indexing %s generation %d: %w", name, gen, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("indexing %s generation %d: %s is not a directory", name, gen, root)
	}
	t := &tree{
		name: name,
		gen:  gen,
		id:   makeGenID(name, gen),
		fs:   osfs.New(root, osfs.WithBoundOS()),
	}
	rootEnt := entry{parent: 0, check: pathHash(0, "")}
	rootEnt.attr = toFattr(st)
	t.ents = append(t.ents, rootEnt)

	type inode struct{ dev, ino uint64 }
	links := map[inode]uint64{} // first fileid of each hard-linked inode
	dirPaths := map[uint32]string{0: ""}
	queue := []uint32{0}
	for len(queue) > 0 {
		di := queue[0]
		queue = queue[1:]
		dpath := dirPaths[di]
		delete(dirPaths, di)
		infos, err := t.fs.ReadDir(dirOrDot(dpath))
		if err != nil {
			return nil, fmt.Errorf("indexing %s generation %d: reading /%s: %w", name, gen, dpath, err)
		}
		// os.ReadDir sorts by name already; the numbering relies on it.
		first := uint32(len(t.ents))
		for _, fi := range infos {
			if uint64(len(t.ents)) >= 1<<32-1 {
				return nil, fmt.Errorf("indexing %s generation %d: more than 2^32 entries", name, gen)
			}
			e := entry{name: fi.Name(), parent: di, check: pathHash(t.ents[di].check, fi.Name())}
			e.attr = toFattr(fi)
			idx := uint32(len(t.ents))
			e.attr.fileid = uint64(idx) + 1
			if s, ok := fi.Sys().(*syscall.Stat_t); ok && e.attr.typ != nf3Dir && s.Nlink > 1 {
				k := inode{uint64(s.Dev), s.Ino}
				if id, seen := links[k]; seen {
					e.attr.fileid = id
				} else {
					links[k] = e.attr.fileid
				}
			}
			if e.attr.typ == nf3Reg {
				t.totalBytes += e.attr.size
			}
			t.ents = append(t.ents, e)
			if e.attr.typ == nf3Dir {
				p := fi.Name()
				if dpath != "" {
					p = dpath + "/" + p
				}
				dirPaths[idx] = p
				queue = append(queue, idx)
			}
		}
		t.ents[di].first = first
		t.ents[di].nchild = uint32(len(t.ents)) - first
	}
	t.ents[0].attr.fileid = 1
	// Shrink the slice to what is used: a 200k-entry image is the common
	// case and append's doubling would keep up to twice that alive.
	t.ents = append([]entry(nil), t.ents...)
	return t, nil
}

func dirOrDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

func pathHash(parent uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], parent)
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

func toFattr(fi fs.FileInfo) fattr {
	var a fattr
	s, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		// Not reachable on Linux; keep a sane answer rather than a panic.
		a.typ, a.mode, a.nlink, a.size = nf3Reg, uint32(fi.Mode().Perm()), 1, uint64(fi.Size())
		return a
	}
	switch s.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		a.typ = nf3Dir
	case syscall.S_IFLNK:
		a.typ = nf3Lnk
	case syscall.S_IFBLK:
		a.typ = nf3Blk
	case syscall.S_IFCHR:
		a.typ = nf3Chr
	case syscall.S_IFSOCK:
		a.typ = nf3Sock
	case syscall.S_IFIFO:
		a.typ = nf3Fifo
	default:
		a.typ = nf3Reg
	}
	a.mode = s.Mode & 0o7777
	a.nlink = uint32(s.Nlink)
	a.uid, a.gid = s.Uid, s.Gid
	a.size = uint64(s.Size)
	a.used = uint64(s.Blocks) * 512
	if a.typ == nf3Blk || a.typ == nf3Chr {
		a.major, a.minor = unix.Major(s.Rdev), unix.Minor(s.Rdev)
	}
	a.atime = nfsTime(s.Atim)
	a.mtime = nfsTime(s.Mtim)
	a.ctime = nfsTime(s.Ctim)
	return a
}

func nfsTime(ts syscall.Timespec) nfstime {
	return nfstime{sec: uint32(ts.Sec), nsec: uint32(ts.Nsec)}
}

// path returns the entry's path relative to the generation root.
func (t *tree) path(i uint32) string {
	var parts []string
	for i != 0 {
		parts = append(parts, t.ents[i].name)
		i = t.ents[i].parent
	}
	for l, r := 0, len(parts)-1; l < r; l, r = l+1, r-1 {
		parts[l], parts[r] = parts[r], parts[l]
	}
	return strings.Join(parts, "/")
}

// lookup finds name among a directory's children by binary search.
func (t *tree) lookup(dir uint32, name string) (uint32, bool) {
	d := &t.ents[dir]
	lo, hi := d.first, d.first+d.nchild
	for lo < hi {
		m := lo + (hi-lo)/2
		switch c := strings.Compare(t.ents[m].name, name); {
		case c == 0:
			return m, true
		case c < 0:
			lo = m + 1
		default:
			hi = m
		}
	}
	return 0, false
}

// walk follows directory names from the root; symlinks are not followed
// (a MOUNT path naming one is refused, as a path through one could leave
// the export).
func (t *tree) walk(names []string) (uint32, bool) {
	var i uint32
	for _, n := range names {
		if n == "" || n == "." {
			continue
		}
		if n == ".." {
			return 0, false
		}
		c, ok := t.lookup(i, n)
		if !ok || t.ents[c].attr.typ != nf3Dir {
			return 0, false
		}
		i = c
	}
	return i, true
}

// File handles: magic, generation id, entry number, path check. 24 bytes,
// a multiple of 4 as Linux prefers, well under NFSv3's 64.
const handleLen = 24

var handleMagic = [4]byte{'b', 'd', 0, 1}

func (t *tree) handle(i uint32) []byte {
	h := make([]byte, 0, handleLen)
	h = append(h, handleMagic[:]...)
	h = append(h, t.id[:]...)
	h = binary.BigEndian.AppendUint32(h, i)
	h = binary.BigEndian.AppendUint64(h, t.ents[i].check)
	return h
}

// parseHandle splits a handle into its generation id and entry number, or
// reports that it is not a bootd handle at all.
func parseHandle(h []byte) (genID, uint32, uint64, bool) {
	var id genID
	if len(h) != handleLen || [4]byte(h[:4]) != handleMagic {
		return id, 0, 0, false
	}
	copy(id[:], h[4:12])
	return id, binary.BigEndian.Uint32(h[12:16]), binary.BigEndian.Uint64(h[16:24]), true
}

// entryFor checks that an entry number and path check belong to this tree.
func (t *tree) entryFor(i uint32, check uint64) bool {
	return uint64(i) < uint64(len(t.ents)) && t.ents[i].check == check
}

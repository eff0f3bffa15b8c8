package nfs

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"strconv"
	"strings"

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
	fs   billy.Filesystem // osfs BoundOS on the generation's root: file contents and symlink targets
	// chunks hold the entries, numbered from 0 (the root).
	chunks [][]entry
	n      uint32

	totalBytes uint64
	// rootID is the root directory's identity when it was indexed: a
	// generation directory removed and made again is another tree.
	rootID [2]uint64
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

// chunkBits sizes the blocks entries are stored in: growing one slice by
// append would copy (and keep as garbage) the whole index several times
// over while a 200k-entry image is read.
const chunkBits = 12

func (t *tree) e(i uint32) *entry { return &t.chunks[i>>chunkBits][i&(1<<chunkBits-1)] }

func (t *tree) count() uint32 { return t.n }

func (t *tree) add(e entry) uint32 {
	i := t.n
	if i>>chunkBits == uint32(len(t.chunks)) {
		t.chunks = append(t.chunks, make([]entry, 1<<chunkBits))
	}
	*t.e(i) = e
	t.n++
	return i
}

// buildTree walks root and indexes it. It never follows symlinks and never
// leaves root: directories are opened relative to the root with symlinks
// refused at every step, and entries are read with fstatat into one
// buffer, so indexing a large image makes little garbage.
func buildTree(name string, gen int, root string) (*tree, error) {
	fail := func(err error) (*tree, error) {
		return nil, fmt.Errorf("indexing %s generation %d: %w", name, gen, err)
	}
	rootFd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(&os.PathError{Op: "open", Path: root, Err: err})
	}
	defer unix.Close(rootFd)
	var st unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		return fail(err)
	}
	t := &tree{
		name:   name,
		gen:    gen,
		id:     makeGenID(name, gen),
		fs:     osfs.New(root, osfs.WithBoundOS()),
		rootID: [2]uint64{st.Dev, st.Ino},
	}
	rootEnt := entry{parent: 0, check: pathHash(0, "")}
	rootEnt.attr = statAttr(&st)
	rootEnt.attr.fileid = 1
	t.add(rootEnt)

	type inode struct{ dev, ino uint64 }
	links := map[inode]uint64{} // first fileid of each hard-linked inode
	var names []string
	for di := uint32(0); di < t.count(); di++ { // breadth first: directories are appended as found
		if t.e(di).attr.typ != nf3Dir {
			continue
		}
		fd := rootFd
		if di != 0 {
			fd, err = openBeneath(rootFd, t.path(di))
			if err != nil {
				return fail(fmt.Errorf("opening /%s: %w", t.path(di), err))
			}
		}
		closeFd := func() {
			if fd != rootFd {
				unix.Close(fd)
			}
		}
		names, err = readNames(fd, names[:0])
		if err != nil {
			closeFd()
			return fail(fmt.Errorf("reading /%s: %w", t.path(di), err))
		}
		sort.Strings(names) // the numbering depends on this order
		first := t.count()
		for _, n := range names {
			if t.count() >= 1<<32-1 {
				closeFd()
				return fail(errors.New("more than 2^32 entries"))
			}
			if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				closeFd()
				return fail(fmt.Errorf("stat /%s/%s: %w", t.path(di), n, err))
			}
			e := entry{name: n, parent: di, check: pathHash(t.e(di).check, n)}
			e.attr = statAttr(&st)
			idx := t.count()
			e.attr.fileid = uint64(idx) + 1
			if e.attr.typ != nf3Dir && st.Nlink > 1 {
				k := inode{st.Dev, st.Ino}
				if id, seen := links[k]; seen {
					e.attr.fileid = id
				} else {
					links[k] = e.attr.fileid
				}
			}
			if e.attr.typ == nf3Reg {
				t.totalBytes += e.attr.size
			}
			t.add(e)
		}
		closeFd()
		d := t.e(di)
		d.first = first
		d.nchild = t.count() - first
	}
	t.settle()
	return t, nil
}

// settle makes every attribute the tree serves a function of the tree
// alone, so that a second master serving a copy of the generation (pulled
// through a registry onto another filesystem) answers byte for byte what
// this one does, and a restart changes nothing a node sees:
//   - nlink counts names in this tree: generations made by `image update`
//     share inodes with their parent, so the disk's count includes the
//     other generations' names (and drops when one is removed);
//   - atime and ctime are the mtime: a published generation is never
//     changed, so its ctime only says when the files landed on this
//     master, and atime moves as bootd itself reads them;
//   - a directory's size and every object's space used are computed, not
//     read: they depend on the filesystem and on its history.
func (t *tree) settle() {
	names := map[uint64]uint32{} // fileid -> names in this tree
	for i := uint32(0); i < t.count(); i++ {
		if a := &t.e(i).attr; a.typ != nf3Dir {
			names[a.fileid]++
		}
	}
	for i := uint32(0); i < t.count(); i++ {
		e := t.e(i)
		a := &e.attr
		a.atime, a.ctime = a.mtime, a.mtime
		switch a.typ {
		case nf3Dir:
			a.nlink = 2
			var bytes uint64
			for c := e.first; c < e.first+e.nchild; c++ {
				if t.e(c).attr.typ == nf3Dir {
					a.nlink++
				}
				bytes += 24 + uint64(len(t.e(c).name))
			}
			a.size = max(roundUp(bytes), 4096)
			a.used = a.size
		case nf3Reg:
			a.nlink = names[a.fileid]
			a.used = roundUp(a.size)
		default:
			a.nlink = names[a.fileid]
			a.used = 0
		}
	}
}

func roundUp(n uint64) uint64 { return (n + 4095) &^ 4095 }

// openBeneath opens a directory below root, refusing symlinks on the way
// (openat2 RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH where the kernel has it).
func openBeneath(rootFd int, rel string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH}
	fd, err := unix.Openat2(rootFd, rel, &how)
	if err == unix.ENOSYS {
		return unix.Openat(rootFd, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// readNames lists a directory's names (without . and ..) from its fd.
func readNames(fd int, names []string) ([]string, error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return names, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
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

func statAttr(s *unix.Stat_t) fattr {
	var a fattr
	switch s.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		a.typ = nf3Dir
	case unix.S_IFLNK:
		a.typ = nf3Lnk
	case unix.S_IFBLK:
		a.typ = nf3Blk
	case unix.S_IFCHR:
		a.typ = nf3Chr
	case unix.S_IFSOCK:
		a.typ = nf3Sock
	case unix.S_IFIFO:
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

func nfsTime(ts unix.Timespec) nfstime {
	return nfstime{sec: uint32(ts.Sec), nsec: uint32(ts.Nsec)}
}

// path returns the entry's path relative to the generation root.
func (t *tree) path(i uint32) string {
	var parts []string
	for i != 0 {
		parts = append(parts, t.e(i).name)
		i = t.e(i).parent
	}
	for l, r := 0, len(parts)-1; l < r; l, r = l+1, r-1 {
		parts[l], parts[r] = parts[r], parts[l]
	}
	return strings.Join(parts, "/")
}

// lookup finds name among a directory's children by binary search.
func (t *tree) lookup(dir uint32, name string) (uint32, bool) {
	d := t.e(dir)
	lo, hi := d.first, d.first+d.nchild
	for lo < hi {
		m := lo + (hi-lo)/2
		switch c := strings.Compare(t.e(m).name, name); {
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
		if !ok || t.e(c).attr.typ != nf3Dir {
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
	h = binary.BigEndian.AppendUint64(h, t.e(i).check)
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
	return i < t.count() && t.e(i).check == check
}

package nfs

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"slices"

	gonfs "github.com/willscott/go-nfs"
)

// The NFSv3 vocabulary (RFC 1813) is go-nfs's: procedure numbers and
// status codes.
const (
	procNull        = uint32(gonfs.NFSProcedureNull)
	procGetattr     = uint32(gonfs.NFSProcedureGetAttr)
	procSetattr     = uint32(gonfs.NFSProcedureSetAttr)
	procLookup      = uint32(gonfs.NFSProcedureLookup)
	procAccess      = uint32(gonfs.NFSProcedureAccess)
	procReadlink    = uint32(gonfs.NFSProcedureReadlink)
	procRead        = uint32(gonfs.NFSProcedureRead)
	procWrite       = uint32(gonfs.NFSProcedureWrite)
	procCreate      = uint32(gonfs.NFSProcedureCreate)
	procMkdir       = uint32(gonfs.NFSProcedureMkDir)
	procSymlink     = uint32(gonfs.NFSProcedureSymlink)
	procMknod       = uint32(gonfs.NFSProcedureMkNod)
	procRemove      = uint32(gonfs.NFSProcedureRemove)
	procRmdir       = uint32(gonfs.NFSProcedureRmDir)
	procRename      = uint32(gonfs.NFSProcedureRename)
	procLink        = uint32(gonfs.NFSProcedureLink)
	procReaddir     = uint32(gonfs.NFSProcedureReadDir)
	procReaddirplus = uint32(gonfs.NFSProcedureReadDirPlus)
	procFsstat      = uint32(gonfs.NFSProcedureFSStat)
	procFsinfo      = uint32(gonfs.NFSProcedureFSInfo)
	procPathconf    = uint32(gonfs.NFSProcedurePathConf)
	procCommit      = uint32(gonfs.NFSProcedureCommit)
)

const (
	nfs3OK           = uint32(gonfs.NFSStatusOk)
	nfs3ErrNoEnt     = uint32(gonfs.NFSStatusNoEnt)
	nfs3ErrIO        = uint32(gonfs.NFSStatusIO)
	nfs3ErrAcces     = uint32(gonfs.NFSStatusAccess)
	nfs3ErrNotDir    = uint32(gonfs.NFSStatusNotDir)
	nfs3ErrIsDir     = uint32(gonfs.NFSStatusIsDir)
	nfs3ErrInval     = uint32(gonfs.NFSStatusInval)
	nfs3ErrROFS      = uint32(gonfs.NFSStatusROFS)
	nfs3ErrNameLong  = uint32(gonfs.NFSStatusNameTooLong)
	nfs3ErrStale     = uint32(gonfs.NFSStatusStale)
	nfs3ErrBadHandle = uint32(gonfs.NFSStatusBadHandle)
	nfs3ErrBadCookie = uint32(gonfs.NFSStatusBadCookie)
	nfs3ErrTooSmall  = uint32(gonfs.NFSStatusTooSmall)
)

// ACCESS3 bits.
const (
	accessRead    = 0x01
	accessLookup  = 0x02
	accessModify  = 0x04
	accessExtend  = 0x08
	accessDelete  = 0x10
	accessExecute = 0x20
)

// maxIO is the largest READ (and advertised rtmax): Linux then reads in
// 1 MiB calls, as it does from kernel nfsd.
const maxIO = 1 << 20

// failBodyWords is how many XDR words follow the status in each mutating
// procedure's failure result (wcc_data is two absent attributes; RENAME
// has two of them, LINK a post_op_attr and a wcc_data).
var failBodyWords = map[uint32]int{
	procSetattr: 2, procWrite: 2, procCreate: 2, procMkdir: 2, procSymlink: 2,
	procMknod: 2, procRemove: 2, procRmdir: 2, procRename: 4, procLink: 3, procCommit: 2,
}

func (c *call) nfs() {
	if c.h.proc == procNull {
		c.ok()
		return
	}
	if n, mutating := failBodyWords[c.h.proc]; mutating {
		fh := c.args.opaque(64)
		if c.args.err != nil {
			c.garbage()
			return
		}
		st := uint32(nfs3ErrROFS)
		if _, _, s := c.resolve(fh); s != nfs3OK {
			st = s
		}
		c.ok()
		c.w.u32(st)
		for range n {
			c.w.u32(0)
		}
		return
	}
	if c.s.cfg.Record != nil {
		c.record()
	}
	switch c.h.proc {
	case procGetattr:
		c.getattr()
	case procLookup:
		c.lookup()
	case procAccess:
		c.access()
	case procReadlink:
		c.readlink()
	case procRead:
		c.read()
	case procReaddir:
		c.readdir(false)
	case procReaddirplus:
		c.readdir(true)
	case procFsstat, procFsinfo, procPathconf:
		c.fsProc()
	default:
		c.procUnavail()
	}
}

// resolve turns a file handle into a tree and entry.
func (c *call) resolve(fh []byte) (*tree, uint32, uint32) {
	id, idx, check, ok := parseHandle(fh)
	if !ok {
		return nil, 0, nfs3ErrBadHandle
	}
	t, err := c.s.treeByID(id)
	if err != nil {
		if !errors.Is(err, errStale) {
			c.log.Warn("generation unavailable", "err", err)
		}
		return nil, 0, nfs3ErrStale
	}
	if !t.entryFor(idx, check) {
		return nil, 0, nfs3ErrStale
	}
	return t, idx, nfs3OK
}

// object resolves the file handle argument once all arguments are read;
// on failure it has answered (garbage arguments, or a failure status).
func (c *call) object(fh []byte) (*tree, uint32, bool) {
	if c.args.err != nil {
		c.garbage()
		return nil, 0, false
	}
	t, i, st := c.resolve(fh)
	if st != nfs3OK {
		c.fail(st)
		return nil, 0, false
	}
	return t, i, true
}

// fail writes a status and an absent post_op_attr, the failure result of
// every non-mutating procedure but GETATTR.
func (c *call) fail(st uint32) {
	c.ok()
	c.w.u32(st)
	c.w.u32(0)
}

func (c *call) fattr(t *tree, i uint32) {
	a := &t.e(i).attr
	w := c.w
	w.u32(a.typ)
	w.u32(a.mode)
	w.u32(a.nlink)
	w.u32(a.uid)
	w.u32(a.gid)
	w.u64(a.size)
	w.u64(a.used)
	w.u32(a.major)
	w.u32(a.minor)
	w.u64(binary.BigEndian.Uint64(t.id[:]))
	w.u64(a.fileid)
	for _, ts := range [3]nfstime{a.atime, a.mtime, a.ctime} {
		w.u32(ts.sec)
		w.u32(ts.nsec)
	}
}

func (c *call) postOpAttr(t *tree, i uint32) {
	c.w.u32(1)
	c.fattr(t, i)
}

func (c *call) getattr() {
	fh := c.args.opaque(64)
	if c.args.err != nil {
		c.garbage()
		return
	}
	t, i, st := c.resolve(fh)
	c.ok()
	c.w.u32(st)
	if st == nfs3OK {
		c.fattr(t, i)
	}
}

func (c *call) lookup() {
	fh := c.args.opaque(64)
	name := c.args.opaque(1024)
	t, dir, ok := c.object(fh)
	if !ok {
		return
	}
	if t.e(dir).attr.typ != nf3Dir {
		c.fail(nfs3ErrNotDir)
		return
	}
	var found uint32
	st := nfs3OK
	switch n := string(name); {
	case len(n) > 255:
		st = nfs3ErrNameLong
	case n == ".":
		found = dir
	case n == "..":
		found = t.e(dir).parent
	default:
		var ok bool
		if found, ok = t.lookup(dir, n); !ok {
			st = nfs3ErrNoEnt
		}
	}
	c.ok()
	c.w.u32(st)
	if st != nfs3OK {
		c.postOpAttr(t, dir)
		return
	}
	c.w.opaque(t.handle(found))
	c.postOpAttr(t, found)
	c.postOpAttr(t, dir)
}

// perm returns the rwx bits that apply to the caller for an entry.
func (c *call) perm(a *fattr) uint32 {
	cr := c.h.cred
	if cr.uid == 0 {
		p := uint32(4)
		if a.typ == nf3Dir || a.mode&0o111 != 0 {
			p |= 1
		}
		return p
	}
	if cr.uid == a.uid {
		return a.mode >> 6 & 7
	}
	if cr.gid == a.gid {
		return a.mode >> 3 & 7
	}
	for _, g := range cr.gids {
		if g == a.gid {
			return a.mode >> 3 & 7
		}
	}
	return a.mode & 7
}

func (c *call) access() {
	fh := c.args.opaque(64)
	want := c.args.u32()
	t, i, ok := c.object(fh)
	if !ok {
		return
	}
	a := &t.e(i).attr
	p := c.perm(a)
	var got uint32
	if p&4 != 0 {
		got |= accessRead
	}
	if p&1 != 0 {
		if a.typ == nf3Dir {
			got |= accessLookup
		} else {
			got |= accessExecute
		}
	}
	// Modify, extend and delete are never granted: the export is read-only.
	c.ok()
	c.w.u32(nfs3OK)
	c.postOpAttr(t, i)
	c.w.u32(got & want)
}

func (c *call) readlink() {
	fh := c.args.opaque(64)
	t, i, ok := c.object(fh)
	if !ok {
		return
	}
	if t.e(i).attr.typ != nf3Lnk {
		c.fail(nfs3ErrInval)
		return
	}
	// The target goes back raw, absolute or relative: the client resolves
	// it in its own namespace, the server never follows it.
	target, err := t.fs.Readlink(t.path(i))
	if err != nil {
		c.log.Warn("readlink", "image", t.name, "generation", t.gen, "path", t.path(i), "err", err)
		c.fail(ioStatus(err))
		return
	}
	c.ok()
	c.w.u32(nfs3OK)
	c.postOpAttr(t, i)
	c.w.str(target)
}

func ioStatus(err error) uint32 {
	if errors.Is(err, fs.ErrNotExist) {
		return nfs3ErrStale // the generation was removed under us
	}
	return nfs3ErrIO
}

func (c *call) read() {
	fh := c.args.opaque(64)
	off := c.args.u64()
	count := c.args.u32()
	t, i, ok := c.object(fh)
	if !ok {
		return
	}
	a := &t.e(i).attr
	switch {
	case a.typ == nf3Dir:
		c.fail(nfs3ErrIsDir)
		return
	case a.typ != nf3Reg:
		c.fail(nfs3ErrInval)
		return
	case c.perm(a)&5 == 0:
		// Like knfsd, execute permission is enough to read: the client's
		// kernel must read a binary to run it.
		c.fail(nfs3ErrAcces)
		return
	}
	count = min(count, maxIO)
	if off >= a.size {
		count = 0
	} else {
		count = uint32(min(uint64(count), a.size-off))
	}
	c.ok()
	c.w.u32(nfs3OK)
	c.postOpAttr(t, i)
	if c.zeroCopy && count >= zeroCopyMin {
		if tail, ok := c.s.files.tail(t, i, int64(off), int(count)); ok {
			eof := uint32(0)
			if off+uint64(count) >= a.size {
				eof = 1
			}
			c.w.u32(count)
			c.w.u32(eof)
			c.w.u32(count)
			c.tail = tail
			c.s.cfg.Metrics.read(int(count))
			return
		}
	}
	hdr := len(c.w.b)
	c.w.u32(0) // count, filled in below
	c.w.u32(0) // eof
	c.w.u32(0) // data length
	// Grow without zeroing: the read overwrites the data, padding is
	// cleared below.
	c.w.b = slices.Grow(c.w.b, (int(count)+3)&^3)
	c.w.b = c.w.b[:len(c.w.b)+(int(count)+3)&^3]
	n := 0
	if count > 0 {
		var err error
		n, err = c.s.files.readAt(t, i, c.w.b[hdr+12:hdr+12+int(count)], int64(off))
		if err != nil {
			c.log.Warn("read", "image", t.name, "generation", t.gen, "path", t.path(i), "err", err)
			c.w.b = c.w.b[:hdr-4-88]
			c.w.u32(ioStatus(err))
			c.postOpAttr(t, i)
			return
		}
	}
	binary.BigEndian.PutUint32(c.w.b[hdr:], uint32(n))
	if off+uint64(n) >= a.size {
		binary.BigEndian.PutUint32(c.w.b[hdr+4:], 1)
	}
	binary.BigEndian.PutUint32(c.w.b[hdr+8:], uint32(n))
	c.w.b = c.w.b[:hdr+12+(n+3)&^3]
	c.s.cfg.Metrics.read(n)
	for j := hdr + 12 + n; j < len(c.w.b); j++ {
		c.w.b[j] = 0
	}
}

// cookieVerf is the same for every directory of a generation and on every
// master: directory contents never change within a generation.
func (t *tree) cookieVerf() []byte { return t.id[:] }

func (c *call) readdir(plus bool) {
	fh := c.args.opaque(64)
	cookie := c.args.u64()
	verf := c.args.fixed(8)
	dircount := c.args.u32()
	maxcount := dircount
	if plus {
		maxcount = c.args.u32()
	}
	t, dir, ok := c.object(fh)
	if !ok {
		return
	}
	d := t.e(dir)
	if d.attr.typ != nf3Dir {
		c.fail(nfs3ErrNotDir)
		return
	}
	// Positions: 0 is ".", 1 is "..", 2+k is the k-th child. A cookie is
	// the position of the entry after the one it was returned with.
	total := uint64(d.nchild) + 2
	if cookie != 0 && string(verf) != string(t.cookieVerf()) && string(verf) != "\x00\x00\x00\x00\x00\x00\x00\x00" {
		c.fail(nfs3ErrBadCookie)
		return
	}
	if cookie > total {
		c.fail(nfs3ErrBadCookie)
		return
	}
	maxcount = min(maxcount, maxIO)
	c.ok()
	start := len(c.w.b)
	c.w.u32(nfs3OK)
	c.postOpAttr(t, dir)
	c.w.b = append(c.w.b, t.cookieVerf()...)
	used := len(c.w.b) - start + 8 // + list end and eof
	dirUsed := 0
	n := 0
	pos := cookie
	for ; pos < total; pos++ {
		var idx uint32
		var name string
		switch pos {
		case 0:
			idx, name = dir, "."
		case 1:
			idx, name = d.parent, ".."
		default:
			idx = d.first + uint32(pos-2)
			name = t.e(idx).name
		}
		size := 4 + 8 + xdrLen(len(name)) + 8
		dsize := 8 + xdrLen(len(name)) + 8
		if plus {
			size += 4 + 84 + 4 + xdrLen(handleLen)
		}
		if used+size > int(maxcount) || (plus && dirUsed+dsize > int(dircount) && n > 0) {
			break
		}
		used += size
		dirUsed += dsize
		n++
		c.w.u32(1)
		c.w.u64(t.e(idx).attr.fileid)
		c.w.str(name)
		c.w.u64(pos + 1)
		if plus {
			c.postOpAttr(t, idx)
			c.w.u32(1)
			c.w.opaque(t.handle(idx))
		}
	}
	if n == 0 && pos < total {
		c.w.b = c.w.b[:start]
		c.w.u32(nfs3ErrTooSmall)
		c.postOpAttr(t, dir)
		return
	}
	c.w.u32(0)
	c.w.bool(pos >= total)
}

func (c *call) fsProc() {
	fh := c.args.opaque(64)
	t, i, ok := c.object(fh)
	if !ok {
		return
	}
	c.ok()
	c.w.u32(nfs3OK)
	c.postOpAttr(t, i)
	w := c.w
	switch c.h.proc {
	case procFsstat:
		w.u64(t.totalBytes) // tbytes
		w.u64(0)            // fbytes
		w.u64(0)            // abytes
		w.u64(uint64(t.count()))
		w.u64(0)
		w.u64(0)
		w.u32(0xffffffff) // invarsec: a generation never changes
	case procFsinfo:
		w.u32(maxIO)    // rtmax
		w.u32(maxIO)    // rtpref
		w.u32(4096)     // rtmult
		w.u32(maxIO)    // wtmax
		w.u32(maxIO)    // wtpref
		w.u32(4096)     // wtmult
		w.u32(64 << 10) // dtpref
		w.u64(1<<63 - 1)
		w.u32(0) // time_delta: nanoseconds as stored
		w.u32(1)
		w.u32(0x1 | 0x2 | 0x8) // FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS
	case procPathconf:
		w.u32(0xffffffff) // linkmax
		w.u32(255)        // name_max
		w.bool(true)      // no_trunc
		w.bool(true)      // chown_restricted
		w.bool(false)     // case_insensitive
		w.bool(true)      // case_preserving
	}
}

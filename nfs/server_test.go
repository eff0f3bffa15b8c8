package nfs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/store"
)

func TestAttributesAsOnDisk(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, st := rc.mount("/demo/1")
	if st != mnt3OK {
		t.Fatalf("MNT status %d", st)
	}
	check := func(path string, typ, mode uint32) wireAttr {
		t.Helper()
		_, a := rc.lookupPath(root, strings.Split(path, "/")...)
		var sb syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(fx.root, path), &sb); err != nil {
			t.Fatal(err)
		}
		if a.typ != typ || a.mode != mode {
			t.Errorf("%s: type %d mode %#o, want type %d mode %#o", path, a.typ, a.mode, typ, mode)
		}
		if a.uid != sb.Uid || a.gid != sb.Gid || (typ != nf3Dir && a.size != uint64(sb.Size)) {
			t.Errorf("%s: uid %d gid %d size %d, disk has %d %d %d", path, a.uid, a.gid, a.size, sb.Uid, sb.Gid, sb.Size)
		}
		// A published generation never changes: atime and ctime are served
		// as its mtime, the same on every master.
		if mt := nfsTime(unix.Timespec(sb.Mtim)); a.mtime != mt || a.ctime != mt || a.atime != mt {
			t.Errorf("%s: times %v %v %v, disk has mtime %v", path, a.atime, a.mtime, a.ctime, sb.Mtim)
		}
		return a
	}
	check("bin/sudo", nf3Reg, 0o4755)
	check("bin/wall", nf3Reg, 0o2755)
	check("tmp", nf3Dir, 0o1777)
	check("etc/hostname", nf3Reg, 0o644)
	check("etc/localtime", nf3Lnk, 0o777)
	check("run/initctl", nf3Fifo, 0o600)
	if os.Geteuid() == 0 {
		if a := check("dev/null", nf3Chr, 0o666); a.major != 1 || a.minor != 3 {
			t.Errorf("dev/null: rdev %d:%d, want 1:3", a.major, a.minor)
		}
		if a := check("dev/sda", nf3Blk, 0o660); a.major != 8 || a.minor != 0 {
			t.Errorf("dev/sda: rdev %d:%d, want 8:0", a.major, a.minor)
		}
		if a := check("etc/hostname", nf3Reg, 0o644); a.uid != 1234 || a.gid != 5678 {
			t.Errorf("etc/hostname owner %d:%d, want 1234:5678", a.uid, a.gid)
		}
	}

	// Hard links share a fileid; other objects do not.
	_, s1 := rc.lookupPath(root, "bin", "sudo")
	_, s2 := rc.lookupPath(root, "bin", "sudo-hard")
	_, s3 := rc.lookupPath(root, "data", "deep", "er", "third-link")
	_, w := rc.lookupPath(root, "bin", "wall")
	if s1.fileid != s2.fileid || s1.fileid != s3.fileid {
		t.Errorf("hard links have fileids %d %d %d, want one", s1.fileid, s2.fileid, s3.fileid)
	}
	if s1.fileid == w.fileid || s1.nlink != 3 {
		t.Errorf("sudo fileid %d nlink %d; wall fileid %d", s1.fileid, s1.nlink, w.fileid)
	}

	// Symlink targets come back raw, absolute ones included.
	for path, want := range map[string]string{"etc/localtime": "/usr/share/zoneinfo/UTC", "etc/rel": "../bin/sudo", "escape": "/", "up": "../../../../../../etc"} {
		fh, _ := rc.lookupPath(root, strings.Split(path, "/")...)
		r := rc.nfs(procReadlink, fh)
		if st := r.u32(); st != nfs3OK {
			t.Fatalf("READLINK %s: %d", path, st)
		}
		readPostOp(r)
		if got := string(r.opaque(4096)); got != want {
			t.Errorf("READLINK %s = %q, want %q", path, got, want)
		}
	}
	// READLINK of a file is an error, not a crash.
	fh, _ := rc.lookupPath(root, "etc", "hostname")
	if st := rc.nfs(procReadlink, fh).u32(); st != nfs3ErrInval {
		t.Errorf("READLINK of a file: %d, want INVAL", st)
	}
}

func TestReadContents(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, _ := rc.mount("/demo")
	fh, a := rc.lookupPath(root, "data", "big")
	want, _ := os.ReadFile(filepath.Join(fx.root, "data/big"))
	var got []byte
	for off := uint64(0); ; {
		r := rc.nfs(procRead, fh, off, uint32(256<<10+5)) // odd size: padding
		if st := r.u32(); st != nfs3OK {
			t.Fatalf("READ at %d: %d", off, st)
		}
		readPostOp(r)
		n := r.u32()
		eof := r.u32()
		data := r.opaque(maxIO)
		if int(n) != len(data) || r.err != nil {
			t.Fatalf("READ count %d, data %d, err %v", n, len(data), r.err)
		}
		got = append(got, data...)
		off += uint64(n)
		if eof == 1 {
			break
		}
		if n == 0 {
			t.Fatal("READ returned 0 bytes without eof")
		}
	}
	if a.size != uint64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (sha %x), want %d (sha %x)", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	// Past the end: zero bytes and eof.
	r := rc.nfs(procRead, fh, uint64(len(want)+10), uint32(100))
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("READ past end: %d", st)
	}
	readPostOp(r)
	if n, eof := r.u32(), r.u32(); n != 0 || eof != 1 {
		t.Errorf("READ past end: count %d eof %d", n, eof)
	}
	// Reading a directory, or a file the caller may not read.
	dir, _ := rc.lookupPath(root, "data")
	if st := rc.nfs(procRead, dir, uint64(0), uint32(10)).u32(); st != nfs3ErrIsDir {
		t.Errorf("READ of a directory: %d, want ISDIR", st)
	}
	secret, _ := rc.lookupPath(root, "data", "secret")
	rc.uid = 1000
	if st := rc.nfs(procRead, secret, uint64(0), uint32(10)).u32(); st != nfs3ErrAcces {
		t.Errorf("READ of a 0600 root file as uid 1000: %d, want ACCES", st)
	}
	r = rc.nfs(procAccess, secret, uint32(0x3f))
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("ACCESS: %d", st)
	}
	readPostOp(r)
	if got := r.u32(); got != 0 {
		t.Errorf("ACCESS of a 0600 root file as uid 1000: %#x, want 0", got)
	}
	rc.uid = 0
	r = rc.nfs(procAccess, dir, uint32(0x3f))
	r.u32()
	readPostOp(r)
	if got := r.u32(); got != accessRead|accessLookup {
		t.Errorf("ACCESS of a directory as root: %#x, want read|lookup only", got)
	}
}

// readdirAll lists a directory with READDIR or READDIRPLUS in small
// pieces, following cookies, and returns names with their handles.
func readdirAll(t *testing.T, rc *rawClient, dir []byte, plus bool, count uint32) ([]string, map[string][]byte) {
	t.Helper()
	var names []string
	handles := map[string][]byte{}
	cookie := uint64(0)
	var verf [8]byte
	for calls := 0; ; calls++ {
		if calls > 100000 {
			t.Fatal("READDIR does not end")
		}
		var r *xdrReader
		if plus {
			r = rc.nfs(procReaddirplus, dir, cookie, verf, count/2, count)
		} else {
			r = rc.nfs(procReaddir, dir, cookie, verf, count)
		}
		if st := r.u32(); st != nfs3OK {
			t.Fatalf("READDIR cookie %d: status %d", cookie, st)
		}
		readPostOp(r)
		copy(verf[:], r.fixed(8))
		for r.u32() == 1 {
			r.u64()
			name := string(r.opaque(255))
			cookie = r.u64()
			if plus {
				readPostOp(r)
				if r.u32() == 1 {
					handles[name] = r.opaque(64)
				}
			}
			names = append(names, name)
		}
		if r.u32() == 1 {
			break
		}
		if r.err != nil {
			t.Fatalf("decoding READDIR: %v", r.err)
		}
	}
	return names, handles
}

func TestReaddirManyAndStableCookies(t *testing.T) {
	fx := makeFixture(t, true)
	addr := serve(t, fx.store, nil)
	rc := dialRaw(t, addr)
	root, _ := rc.mount("/demo/1")
	many, _ := rc.lookupPath(root, "many")
	dirs, handles := readdirAll(t, rc, many, true, 4096)
	if len(dirs) != 202 {
		t.Fatalf("many/ lists %d entries, want 200 + . and ..", len(dirs))
	}
	total := 0
	for _, d := range dirs[2:] {
		names, _ := readdirAll(t, rc, handles[d], false, 1024)
		plusNames, _ := readdirAll(t, rc, handles[d], true, 8192)
		if strings.Join(names, ",") != strings.Join(plusNames, ",") {
			t.Fatalf("READDIR and READDIRPLUS disagree in %s", d)
		}
		total += len(names) - 2
	}
	if total != fx.nfiles {
		t.Fatalf("walk found %d files, want %d", total, fx.nfiles)
	}
	// A cookie from this server resumes a listing on a fresh server
	// (a bootd restart) at the same place.
	r := rc.nfs(procReaddir, handles["d007"], uint64(0), [8]byte{}, uint32(600))
	r.u32()
	readPostOp(r)
	verf := [8]byte(r.fixed(8))
	var last uint64
	for r.u32() == 1 {
		r.u64()
		r.opaque(255)
		last = r.u64()
	}
	want, _ := readdirAll(t, rc, handles["d007"], false, 1<<16)
	rc2 := dialRaw(t, serve(t, fx.store, nil))
	r = rc2.nfs(procReaddir, handles["d007"], last, verf, uint32(1<<16))
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("READDIR with a cookie from before the restart: %d", st)
	}
	readPostOp(r)
	r.fixed(8)
	r.u32()
	r.u64()
	if name := string(r.opaque(255)); name != want[last] {
		t.Errorf("resumed at %q, want %q", name, want[last])
	}
	// A cookie with another generation's verifier is refused.
	if st := rc.nfs(procReaddir, many, uint64(3), [8]byte{1, 2, 3}, uint32(4096)).u32(); st != nfs3ErrBadCookie {
		t.Errorf("READDIR with a foreign verifier: %d, want BAD_COOKIE", st)
	}
}

func TestReadOnly(t *testing.T) {
	fx := makeFixture(t, false)
	before := treeDigest(t, fx.root)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, _ := rc.mount("/demo/1")
	file, _ := rc.lookupPath(root, "etc", "hostname")
	sattr := enc(1, uint32(0o777), 0, 0, 1, uint64(0), 0, 0) // mode set, size 0
	calls := map[uint32][]byte{
		procSetattr: append(append(enc(file), sattr...), enc(0)...),
		procWrite:   enc(file, uint64(0), uint32(3), uint32(2), []byte("abc")),
		procCreate:  append(enc(root, "new", uint32(0)), sattr...),
		procMkdir:   append(enc(root, "newdir"), sattr...),
		procSymlink: append(append(enc(root, "ln"), sattr...), enc("/x")...),
		procMknod:   enc(root, "fifo", uint32(nf3Fifo), 0, 0, 0, 0, 0, 0, 0),
		procRemove:  enc(root, "etc"),
		procRmdir:   enc(root, "tmp"),
		procRename:  enc(root, "etc", root, "etc2"),
		procLink:    enc(file, root, "hl"),
		procCommit:  enc(file, uint64(0), uint32(0)),
	}
	for proc, args := range calls {
		rep := rc.call(progNFS, 3, proc, args)
		if rep.denied || rep.stat != acceptSuccess {
			t.Fatalf("proc %d: denied=%v stat=%d", proc, rep.denied, rep.stat)
		}
		if st := rep.body.u32(); st != nfs3ErrROFS {
			t.Errorf("proc %d: status %d, want ROFS", proc, st)
		}
		for i := 0; i < failBodyWords[proc]; i++ {
			rep.body.u32()
		}
		if rep.body.err != nil || len(rep.body.b) != 0 {
			t.Errorf("proc %d: malformed failure body (err %v, %d bytes left)", proc, rep.body.err, len(rep.body.b))
		}
	}
	if after := treeDigest(t, fx.root); after != before {
		t.Fatal("the export changed on disk")
	}
}

// treeDigest hashes every name, mode, size and content under root.
func treeDigest(t *testing.T, root string) string {
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		fmt.Fprintf(h, "%s %v %d %v\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestNoEscape(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, _ := rc.mount("/demo/1")
	for _, name := range []string{"../..", "..", "../../etc/passwd", "/etc", "etc/hostname", "", "\x00", "escape/etc", strings.Repeat("a", 300)} {
		r := rc.nfs(procLookup, root, name)
		st := r.u32()
		if name == ".." {
			// The root's parent is the root itself.
			fh := r.opaque(64)
			if st != nfs3OK || !bytes.Equal(fh, root) {
				t.Errorf("LOOKUP .. at the root: %d, handle %x, want the root", st, fh)
			}
			continue
		}
		if st == nfs3OK {
			t.Errorf("LOOKUP %q from the root succeeded", name)
		}
	}
	// LOOKUP through a symlink is a LOOKUP in a non-directory.
	esc, _ := rc.lookupPath(root, "escape")
	if st := rc.nfs(procLookup, esc, "etc").u32(); st != nfs3ErrNotDir {
		t.Errorf("LOOKUP through a symlink: %d, want NOTDIR", st)
	}
	// MOUNT paths cannot climb out or pass symlinks.
	for _, p := range []string{"/demo/1/..", "/demo/1/../../../", "/demo/1/escape", "/demo/1/up", "/demo/1/etc/hostname", "/../demo/1", "demo/1", "/demo/0", "/demo/01", "/demo/-1", "/nope", "/Demo", "/demo/1/data/../../.."} {
		if _, st := rc.mount(p); st == mnt3OK {
			t.Errorf("MOUNT %q succeeded", p)
		}
	}
	if fh, st := rc.mount("/demo/current/data/deep"); st != mnt3OK {
		t.Errorf("MOUNT of a subdirectory: %d", st)
	} else if _, a := rc.lookupPath(fh, "er", "third-link"); a.typ != nf3Reg {
		t.Errorf("subdirectory mount: lookup gave type %d", a.typ)
	}
}

func TestForgedHandles(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, _ := rc.mount("/demo/1")
	flip := func(i int) []byte {
		h := bytes.Clone(root)
		h[i] ^= 0x40
		return h
	}
	outOfRange := bytes.Clone(root)
	outOfRange[12], outOfRange[13] = 0x7f, 0xff
	cases := map[string]struct {
		fh   []byte
		want uint32
	}{
		"empty":              {nil, nfs3ErrBadHandle},
		"short":              {root[:20], nfs3ErrBadHandle},
		"long":               {append(bytes.Clone(root), 0, 0, 0, 0), nfs3ErrBadHandle},
		"bad magic":          {flip(0), nfs3ErrBadHandle},
		"other gen":          {flip(5), nfs3ErrStale},
		"bad check":          {flip(20), nfs3ErrStale},
		"entry out of range": {outOfRange, nfs3ErrStale},
		"garbage":            {bytes.Repeat([]byte{0xff}, 64), nfs3ErrBadHandle},
	}
	for name, c := range cases {
		if _, st := rc.getattr(c.fh); st != c.want {
			t.Errorf("GETATTR with %s handle: %d, want %d", name, st, c.want)
		}
		if st := rc.nfs(procRead, c.fh, uint64(0), uint32(10)).u32(); st != c.want {
			t.Errorf("READ with %s handle: %d, want %d", name, st, c.want)
		}
		if st := rc.nfs(procWrite, c.fh, uint64(0), uint32(1), uint32(0), []byte("x")).u32(); st != c.want {
			t.Errorf("WRITE with %s handle: %d, want %d", name, st, c.want)
		}
	}
	// An over-long handle is garbage arguments, and the connection lives on.
	rep := rc.call(progNFS, 3, procGetattr, enc(make([]byte, 65)))
	if rep.stat != acceptGarbageArgs {
		t.Errorf("GETATTR with a 65-byte handle: accept stat %d, want GARBAGE_ARGS", rep.stat)
	}
	if _, st := rc.getattr(root); st != nfs3OK {
		t.Errorf("GETATTR after bad calls: %d", st)
	}
}

func TestHandlesSurviveRestartAndMatchAcrossMasters(t *testing.T) {
	fx := makeFixture(t, true)
	a := dialRaw(t, serve(t, fx.store, nil))
	rootA, _ := a.mount("/demo/1")
	paths := [][]string{{"bin", "sudo"}, {"etc", "localtime"}, {"many", "d123", "f042"}, {"data", "deep", "er"}}
	var handles [][]byte
	var attrs []wireAttr
	for _, p := range paths {
		fh, at := a.lookupPath(rootA, p...)
		handles = append(handles, fh)
		attrs = append(attrs, at)
	}
	// A second master with its own copy of the generation, byte for byte
	// (cp -a keeps names, modes, owners and times; inode numbers differ).
	state2 := fastTempDir(t)
	if out, err := exec.Command("cp", "-a", fx.state+"/.", state2).CombinedOutput(); err != nil {
		t.Fatalf("copying the store: %v: %s", err, out)
	}
	other := *fx
	other.store = store.New(state2)
	b := dialRaw(t, serve(t, other.store, nil))
	rootB, _ := b.mount("/demo/1")
	if !bytes.Equal(rootA, rootB) {
		t.Errorf("root handles differ between masters: %x vs %x", rootA, rootB)
	}
	for i, p := range paths {
		fh, at := b.lookupPath(rootB, p...)
		if !bytes.Equal(fh, handles[i]) {
			t.Errorf("%s: handle %x on master B, %x on A", strings.Join(p, "/"), fh, handles[i])
		}
		if at.fileid != attrs[i].fileid || at.fsid != attrs[i].fsid {
			t.Errorf("%s: fileid/fsid %d/%d on B, %d/%d on A", strings.Join(p, "/"), at.fileid, at.fsid, attrs[i].fileid, attrs[i].fsid)
		}
	}
	// A restarted server (a new Server, nothing cached) answers handles it
	// never gave out, without a MOUNT first.
	c := dialRaw(t, serve(t, fx.store, nil))
	for i, fh := range handles {
		at, st := c.getattr(fh)
		if st != nfs3OK || at.fileid != attrs[i].fileid {
			t.Errorf("%s after restart: status %d fileid %d, want OK %d", strings.Join(paths[i], "/"), st, at.fileid, attrs[i].fileid)
		}
	}
}

func TestGenerationsWithoutRestart(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	old, _ := rc.mount("/demo")
	oldHost, _ := rc.lookupPath(old, "etc", "hostname")
	// Publish generation 2 while the server runs.
	root2 := fx.store.RootDir("demo", 2)
	if err := os.MkdirAll(filepath.Join(root2, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root2, "etc/hostname"), []byte("gen2\n"), 0o644)
	if _, st := rc.mount("/demo/2"); st != mnt3OK {
		t.Fatalf("MOUNT of an unpublished but complete generation: %d", st)
	}
	if err := writeBootFiles(fx.store, "demo", 2); err != nil {
		t.Fatal(err)
	}
	if err := fx.store.Publish("demo", 2); err != nil {
		t.Fatal(err)
	}
	cur, _ := rc.mount("/demo")
	if bytes.Equal(cur, old) {
		t.Fatal("/demo still resolves to generation 1 after publishing 2")
	}
	fh, _ := rc.lookupPath(cur, "etc", "hostname")
	r := rc.nfs(procRead, fh, uint64(0), uint32(100))
	r.u32()
	readPostOp(r)
	r.u32()
	r.u32()
	if got := string(r.opaque(100)); got != "gen2\n" {
		t.Errorf("generation 2 hostname: %q", got)
	}
	// A node that booted generation 1 keeps reading it.
	r = rc.nfs(procRead, oldHost, uint64(0), uint32(100))
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("generation 1 after publishing 2: %d", st)
	}
}

func TestAccessControl(t *testing.T) {
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, nil)
	// 127.0.0.2 is on the loopback interface but not in nfs.allow.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := &rawClient{t: t, c: c, br: bufio.NewReader(c)}
	if err := rc.send(progMount, 3, mntMnt, enc("/demo/1")); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readRecord(rc.br, nil, nil); err == nil {
			t.Fatal("a client outside nfs.allow got a MOUNT reply")
		}
	}

	// secure_ports: an unprivileged source port is refused, a privileged
	// one (we are root in CI) accepted.
	secure := serve(t, fx.store, func(c *Config) { c.SecurePorts = true })
	c2, err := net.Dial("tcp", secure)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rc2 := &rawClient{t: t, c: c2, br: bufio.NewReader(c2)}
	if err := rc2.send(progNFS, 3, procNull, nil); err == nil {
		c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readRecord(rc2.br, nil, nil); err == nil {
			t.Fatal("a client on an unprivileged port got a reply with secure_ports on")
		}
	}
	if os.Geteuid() != 0 {
		return
	}
	for port := 700; port < 1000; port++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: port}}
		c3, err := d.Dial("tcp", secure)
		if err != nil {
			continue // port in use
		}
		defer c3.Close()
		rc3 := &rawClient{t: t, c: c3, br: bufio.NewReader(c3)}
		if _, st := rc3.mount("/demo/1"); st != mnt3OK {
			t.Fatalf("MOUNT from privileged port %d: %d", port, st)
		}
		return
	}
	t.Fatal("no free privileged port to test from")
}

func TestRPCEdges(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	if rep := rc.call(progNFSACL, 3, 0, nil); rep.denied || rep.stat != acceptSuccess {
		t.Errorf("NFSACL NULL: %+v, want SUCCESS", rep)
	}
	if rep := rc.call(progNFSACL, 2, 0, nil); rep.stat != acceptProgMismatch {
		t.Errorf("NFSACL v2 NULL: %+v, want PROG_MISMATCH", rep)
	}
	if rep := rc.call(100021, 4, 0, nil); rep.stat != acceptProgUnavail {
		t.Errorf("NLM NULL: %+v, want PROG_UNAVAIL", rep)
	}
	rep := rc.call(progNFS, 4, 0, nil)
	if rep.stat != acceptProgMismatch {
		t.Errorf("NFSv4 NULL: %+v, want PROG_MISMATCH", rep)
	} else if lo, hi := rep.body.u32(), rep.body.u32(); lo != 3 || hi != 3 {
		t.Errorf("PROG_MISMATCH range %d-%d, want 3-3", lo, hi)
	}
	if rep := rc.call(progNFS, 3, 22, nil); rep.stat != acceptProcUnavail {
		t.Errorf("NFS proc 22: %+v, want PROC_UNAVAIL", rep)
	}
	if rep := rc.call(progMount, 3, mntExport, nil); rep.stat != acceptSuccess {
		t.Errorf("MOUNT EXPORT: %+v", rep)
	} else if rep.body.u32() != 1 || string(rep.body.opaque(1024)) != "/demo/1" {
		t.Errorf("MOUNT EXPORT does not list /demo/1")
	}
	// A call split over two record fragments.
	w := &xdrWriter{}
	w.u32(99)
	w.u32(msgCall)
	w.u32(2)
	w.u32(progNFS)
	w.u32(3)
	w.u32(procNull)
	w.u32(authNone)
	w.u32(0)
	w.u32(authNone)
	w.u32(0)
	frag := func(b []byte, last bool) []byte {
		h := uint32(len(b))
		if last {
			h |= 1 << 31
		}
		return append(enc(h), b...)
	}
	rc.c.Write(append(frag(w.b[:12], false), frag(w.b[12:], true)...))
	rc.xid = 98
	rc.xid++
	if rep := rc.recv(); rep.stat != acceptSuccess {
		t.Errorf("fragmented NULL: %+v", rep)
	}
	// RPC version 3 is refused with the supported range.
	w.b[8+3] = 3
	rc.c.Write(frag(w.b, true))
	if rep := rc.recv(); !rep.denied || rep.stat != rejectRPCMismatch {
		t.Errorf("RPC version 3: %+v, want RPC_MISMATCH", rep)
	}
}

// TestRootSquashedForStrangers: root from an address Squash names gets
// nobody's rights (a 0600 root file is refused); root from elsewhere
// keeps root's.
func TestRootSquashedForStrangers(t *testing.T) {
	fx := makeFixture(t, false)
	for _, c := range []struct {
		squash bool
		want   uint32
	}{{false, nfs3OK}, {true, nfs3ErrAcces}} {
		var asked atomic.Value
		rc := dialRaw(t, serve(t, fx.store, func(cfg *Config) {
			cfg.Squash = func(a netip.Addr) bool { asked.Store(a.String()); return c.squash }
		}))
		root, _ := rc.mount("/demo")
		secret, _ := rc.lookupPath(root, "data", "secret")
		rc.uid = 0
		if st := rc.nfs(procRead, secret, uint64(0), uint32(10)).u32(); st != c.want {
			t.Errorf("squash %v: READ of a 0600 root file as root: %d, want %d", c.squash, st, c.want)
		}
		if got, _ := asked.Load().(string); got != "127.0.0.1" {
			t.Errorf("Squash asked about %q", got)
		}
	}
}

package nfs

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootd/bootd/store"
)

// rawClient speaks ONC RPC over TCP so tests can send exactly the calls a
// kernel client (or an attacker) would, and read every field of a reply.
type rawClient struct {
	t   testing.TB
	c   net.Conn
	br  *bufio.Reader
	xid uint32
	uid uint32
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

// reply is a decoded RPC reply.
type reply struct {
	denied bool
	stat   uint32 // accept_stat, or reject_stat when denied
	body   *xdrReader
}

func (rc *rawClient) send(prog, vers, proc uint32, args []byte) error {
	rc.xid++
	w := &xdrWriter{}
	w.u32(0) // record mark placeholder
	w.u32(rc.xid)
	w.u32(msgCall)
	w.u32(2)
	w.u32(prog)
	w.u32(vers)
	w.u32(proc)
	cw := &xdrWriter{}
	cw.u32(0)
	cw.str("test")
	cw.u32(rc.uid)
	cw.u32(rc.uid)
	cw.u32(0)
	w.u32(authUnix)
	w.opaque(cw.b)
	w.u32(authNone)
	w.u32(0)
	w.b = append(w.b, args...)
	_, err := rc.c.Write(finishReply(w.b))
	return err
}

func (rc *rawClient) call(prog, vers, proc uint32, args []byte) reply {
	rc.t.Helper()
	if err := rc.send(prog, vers, proc, args); err != nil {
		rc.t.Fatalf("sending call: %v", err)
	}
	return rc.recv()
}

func (rc *rawClient) recv() reply {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rec, err := readRecord(rc.br, nil, nil)
	if err != nil {
		rc.t.Fatalf("reading reply: %v", err)
	}
	r := &xdrReader{b: rec}
	if xid := r.u32(); xid != rc.xid {
		rc.t.Fatalf("reply xid %d, want %d", xid, rc.xid)
	}
	if mt := r.u32(); mt != msgReply {
		rc.t.Fatalf("message type %d, want reply", mt)
	}
	var rep reply
	if r.u32() == msgDenied {
		rep.denied = true
		rep.stat = r.u32()
	} else {
		r.u32()
		r.opaque(400)
		rep.stat = r.u32()
	}
	if r.err != nil {
		rc.t.Fatalf("short reply: %v", r.err)
	}
	rep.body = r
	return rep
}

func (rc *rawClient) nfs(proc uint32, args ...any) *xdrReader {
	rc.t.Helper()
	rep := rc.call(progNFS, 3, proc, enc(args...))
	if rep.denied || rep.stat != acceptSuccess {
		rc.t.Fatalf("NFS proc %d: denied=%v stat=%d", proc, rep.denied, rep.stat)
	}
	return rep.body
}

// mount returns the root handle of path.
func (rc *rawClient) mount(path string) ([]byte, uint32) {
	rc.t.Helper()
	rep := rc.call(progMount, 3, mntMnt, enc(path))
	if rep.denied || rep.stat != acceptSuccess {
		rc.t.Fatalf("MNT %s: denied=%v stat=%d", path, rep.denied, rep.stat)
	}
	st := rep.body.u32()
	if st != mnt3OK {
		return nil, st
	}
	return rep.body.opaque(64), st
}

// enc encodes uint32, uint64, string and []byte (as opaque) arguments.
func enc(args ...any) []byte {
	w := &xdrWriter{}
	for _, a := range args {
		switch v := a.(type) {
		case uint32:
			w.u32(v)
		case int:
			w.u32(uint32(v))
		case uint64:
			w.u64(v)
		case string:
			w.str(v)
		case []byte:
			w.opaque(v)
		case [8]byte:
			w.b = append(w.b, v[:]...)
		default:
			panic(fmt.Sprintf("enc: %T", a))
		}
	}
	return w.b
}

// wireAttr is fattr3 as read off the wire.
type wireAttr struct {
	typ, mode, nlink, uid, gid uint32
	size, used                 uint64
	major, minor               uint32
	fsid, fileid               uint64
	atime, mtime, ctime        nfstime
}

func readFattr(r *xdrReader) wireAttr {
	var a wireAttr
	a.typ, a.mode, a.nlink, a.uid, a.gid = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
	a.size, a.used = r.u64(), r.u64()
	a.major, a.minor = r.u32(), r.u32()
	a.fsid, a.fileid = r.u64(), r.u64()
	for _, p := range []*nfstime{&a.atime, &a.mtime, &a.ctime} {
		p.sec, p.nsec = r.u32(), r.u32()
	}
	return a
}

func readPostOp(r *xdrReader) (wireAttr, bool) {
	if r.u32() == 0 {
		return wireAttr{}, false
	}
	return readFattr(r), true
}

// lookupPath walks path from root with LOOKUP, failing the test on error.
func (rc *rawClient) lookupPath(root []byte, names ...string) ([]byte, wireAttr) {
	rc.t.Helper()
	fh := root
	var a wireAttr
	for _, n := range names {
		r := rc.nfs(procLookup, fh, n)
		if st := r.u32(); st != nfs3OK {
			rc.t.Fatalf("LOOKUP %q: status %d", n, st)
		}
		fh = r.opaque(64)
		a, _ = readPostOp(r)
	}
	return fh, a
}

func (rc *rawClient) getattr(fh []byte) (wireAttr, uint32) {
	rc.t.Helper()
	r := rc.nfs(procGetattr, fh)
	st := r.u32()
	if st != nfs3OK {
		return wireAttr{}, st
	}
	return readFattr(r), st
}

// fixture is a generation tree with every kind of object a Debian root has.
type fixture struct {
	store  *store.Store
	state  string
	root   string // generation 1 root
	nfiles int
}

// makeFixture builds STATE/images/demo/1 and publishes it. With many set,
// it adds 20k files spread over 200 directories.
func makeFixture(t testing.TB, many bool) *fixture {
	t.Helper()
	state := fastTempDir(t)
	st := store.New(state)
	root := st.RootDir("demo", 1)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "etc", "tmp", "usr/share/zoneinfo", "dev", "run", "data/deep/er"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("node\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "usr/share/zoneinfo/UTC"), []byte("TZif2"), 0o644))
	must(os.WriteFile(filepath.Join(root, "bin/sudo"), []byte("#!/bin/true\n"), 0o755))
	must(os.Chmod(filepath.Join(root, "bin/sudo"), 0o4755|os.ModeSetuid))
	must(syscall.Chmod(filepath.Join(root, "bin/sudo"), 0o4755))
	must(os.WriteFile(filepath.Join(root, "bin/wall"), []byte("x"), 0o755))
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(root, "bin/wall"), 0, 5)) // before chmod: chown clears setgid
	}
	must(syscall.Chmod(filepath.Join(root, "bin/wall"), 0o2755))
	must(syscall.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must(os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(root, "etc/localtime")))
	must(os.Symlink("../bin/sudo", filepath.Join(root, "etc/rel")))
	must(os.Symlink("/", filepath.Join(root, "escape")))
	must(os.Symlink("../../../../../../etc", filepath.Join(root, "up")))
	must(os.Link(filepath.Join(root, "bin/sudo"), filepath.Join(root, "bin/sudo-hard")))
	must(os.Link(filepath.Join(root, "bin/sudo"), filepath.Join(root, "data/deep/er/third-link")))
	must(syscall.Mkfifo(filepath.Join(root, "run/initctl"), 0o600))
	// A large file, read in many calls; its bytes depend on position.
	big := make([]byte, 3<<20+123)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	must(os.WriteFile(filepath.Join(root, "data/big"), big, 0o644))
	must(os.WriteFile(filepath.Join(root, "data/secret"), []byte("root only"), 0o600))
	if os.Geteuid() == 0 {
		must(syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, int(mkdev(1, 3))))
		must(syscall.Mknod(filepath.Join(root, "dev/sda"), syscall.S_IFBLK|0o660, int(mkdev(8, 0))))
		must(syscall.Chmod(filepath.Join(root, "dev/null"), 0o666)) // mknod obeys the umask
		must(syscall.Chmod(filepath.Join(root, "dev/sda"), 0o660))
		must(os.Lchown(filepath.Join(root, "etc/hostname"), 1234, 5678))
	}
	n := 0
	if many {
		for d := 0; d < 200; d++ {
			dir := filepath.Join(root, "many", fmt.Sprintf("d%03d", d))
			must(os.MkdirAll(dir, 0o755))
			for f := 0; f < 101; f++ {
				must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), []byte(fmt.Sprintf("%d/%d\n", d, f)), 0o644))
				n++
			}
		}
	}
	must(writeBootFiles(st, "demo", 1))
	must(st.Publish("demo", 1))
	return &fixture{store: st, state: state, root: root, nfiles: n}
}

// writeBootFiles gives a generation the kernel and initrd without which
// the store refuses to publish it.
func writeBootFiles(st *store.Store, name string, gen int) error {
	if err := os.MkdirAll(st.BootDir(name, gen), 0o755); err != nil {
		return err
	}
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(st.BootDir(name, gen), f), []byte(f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// fastTempDir is a temporary directory on tmpfs where there is one: the
// fixtures create tens of thousands of files, which takes a millisecond
// each on some disks.
func fastTempDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "bootd-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func mkdev(major, minor uint32) uint64 {
	return uint64(major&0xfff)<<8 | uint64(minor&0xff) | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

// serve starts a server on 127.0.0.1 for the store and returns its address.
func serve(t testing.TB, st *store.Store, mod func(*Config)) string {
	t.Helper()
	addr, _ := serveS(t, st, mod)
	return addr
}

// serveS is serve that also returns the server.
func serveS(t testing.TB, st *store.Store, mod func(*Config)) (string, *Server) {
	t.Helper()
	cfg := Config{Store: st, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s := New(cfg)
	go func() {
		defer close(done)
		if err := s.Serve(ctx, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), s
}

// testLogger sends the server's log to the test's, shown on failure or -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if testing.Short() {
			t.Skipf("%s not installed (the README's test command installs it)", name)
		}
		t.Fatalf("%s not installed: run the README's test command, which installs it", name)
	}
	return p
}

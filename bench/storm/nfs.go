package main

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/nfs"
)

// The NFS part of a node's boot: MOUNT, then the calls a real node made
// during its boot (a recording bootd wrote with nfs.record), by path, so
// that any server can be asked the same questions. The client is written
// here, not taken from go-nfs-client, because each simulated node needs
// its own source address and port, and the Linux client's timeouts.

// op is one recorded call: what bootd's nfs.record writes.
type op = nfs.Op

// recording is one node's calls, in order, with times relative to the
// first.
type recording struct {
	ops []op
	at  []time.Duration
}

// loadRecording reads a recording (JSON lines, gzip if the name ends in
// .gz). A file may hold several nodes' calls: the client that made the
// most is kept.
func loadRecording(name string) (*recording, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = z
	}
	byClient := map[string][]op{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var o op
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if _, ok := procNums[o.Proc]; !ok {
			return nil, fmt.Errorf("%s:%d: unknown procedure %q", name, line, o.Proc)
		}
		host := o.Client.Addr().String()
		byClient[host] = append(byClient[host], o)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var best []op
	for _, ops := range byClient {
		if len(ops) > len(best) {
			best = ops
		}
	}
	if len(best) == 0 {
		return nil, fmt.Errorf("%s: no calls", name)
	}
	rec := &recording{ops: best}
	for _, o := range best {
		rec.at = append(rec.at, o.Time.Sub(best[0].Time))
	}
	return rec, nil
}

// NFSv3 and MOUNT procedure numbers (RFC 1813).
const (
	progNFS   = 100003
	progMount = 100005
	mntProc   = 1
)

var procNums = map[string]uint32{
	"GETATTR": 1, "LOOKUP": 3, "ACCESS": 4, "READLINK": 5, "READ": 6,
	"READDIR": 16, "READDIRPLUS": 17, "FSSTAT": 18, "FSINFO": 19, "PATHCONF": 20,
}

const (
	nfsOK       = 0
	nfsErrNoEnt = 2
)

// Timeouts of the Linux NFS client over TCP: timeo=600 (60 s), retrans=2.
// A call unanswered after the third try is a "server not responding":
// the node's boot stalls behind it, and its systemd gives up on units,
// so the simulated node counts as lost.
var (
	nfsTimeo   = 60 * time.Second
	nfsRetrans = 2
)

// rpcConn is one TCP connection to an RPC server, from one node's address.
type rpcConn struct {
	local  netip.Addr
	server netip.AddrPort
	secure bool
	c      net.Conn
	r      *bufio.Reader
	xid    uint32
	stamp  uint32
	buf    []byte
	// retrans counts calls sent again after a timeout or a lost
	// connection; reconnects, connections made again.
	retrans, reconnects int
}

func dialRPC(local netip.Addr, server netip.AddrPort, secure bool, xidBase uint32) (*rpcConn, error) {
	c := &rpcConn{local: local, server: server, secure: secure, xid: xidBase, stamp: xidBase}
	return c, c.connect()
}

// connect dials from the node's address; from a port below 1024 when the
// server wants secure ports (as the Linux client does).
func (c *rpcConn) connect() error {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
	var lastErr error
	ports := []int{0}
	if c.secure {
		ports = ports[:0]
		for p := 1023; p >= 600; p-- {
			ports = append(ports, p)
		}
	}
	for _, p := range ports {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: c.local.AsSlice(), Port: p},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				return serr
			}}
		conn, err := d.Dial("tcp", c.server.String())
		if err == nil {
			c.c, c.r = conn, bufio.NewReaderSize(conn, 64<<10)
			return nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			break
		}
	}
	return lastErr
}

func (c *rpcConn) Close() {
	if c.c != nil {
		c.c.Close()
	}
}

// call sends one call and returns the reply's results (after the RPC
// header), retrying as the Linux client does: on a timeout or a broken
// connection, connect again and send it again, up to nfsRetrans times.
func (c *rpcConn) call(prog, vers, proc uint32, args []byte) ([]byte, error) {
	var lastErr error
	for try := 0; try <= nfsRetrans; try++ {
		if try > 0 {
			c.retrans++
			c.reconnects++
			if err := c.connect(); err != nil {
				lastErr = err
				time.Sleep(3 * time.Second)
				continue
			}
		}
		if c.c == nil {
			if err := c.connect(); err != nil {
				lastErr = err
				continue
			}
		}
		res, err := c.once(prog, vers, proc, args)
		if err == nil {
			return res, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("server not responding: %w", lastErr)
}

func (c *rpcConn) once(prog, vers, proc uint32, args []byte) ([]byte, error) {
	c.xid++
	xid := c.xid
	b := c.buf[:0]
	b = binary.BigEndian.AppendUint32(b, 0) // record mark, filled below
	b = binary.BigEndian.AppendUint32(b, xid)
	b = binary.BigEndian.AppendUint32(b, 0) // CALL
	b = binary.BigEndian.AppendUint32(b, 2) // RPC version
	b = binary.BigEndian.AppendUint32(b, prog)
	b = binary.BigEndian.AppendUint32(b, vers)
	b = binary.BigEndian.AppendUint32(b, proc)
	// AUTH_UNIX as root, the way a node's kernel mounts its root.
	cred := binary.BigEndian.AppendUint32(nil, c.stamp)
	cred = xdrString(cred, "storm")
	cred = binary.BigEndian.AppendUint32(cred, 0) // uid
	cred = binary.BigEndian.AppendUint32(cred, 0) // gid
	cred = binary.BigEndian.AppendUint32(cred, 0) // no more gids
	b = binary.BigEndian.AppendUint32(b, 1)
	b = xdrOpaque(b, cred)
	b = binary.BigEndian.AppendUint32(b, 0) // verifier: AUTH_NONE
	b = binary.BigEndian.AppendUint32(b, 0)
	b = append(b, args...)
	binary.BigEndian.PutUint32(b, 0x80000000|uint32(len(b)-4))
	c.buf = b
	deadline := time.Now().Add(nfsTimeo)
	c.c.SetDeadline(deadline)
	if _, err := c.c.Write(b); err != nil {
		return nil, err
	}
	for {
		rep, err := c.readRecord()
		if err != nil {
			return nil, err
		}
		if len(rep) < 24 || binary.BigEndian.Uint32(rep) != xid {
			continue // a reply to a call given up on
		}
		if binary.BigEndian.Uint32(rep[4:]) != 1 || binary.BigEndian.Uint32(rep[8:]) != 0 {
			return nil, fmt.Errorf("rpc call %d/%d denied", prog, proc)
		}
		vlen := binary.BigEndian.Uint32(rep[16:])
		off := 20 + int((vlen+3)&^3)
		if len(rep) < off+4 {
			return nil, errors.New("short rpc reply")
		}
		if st := binary.BigEndian.Uint32(rep[off:]); st != 0 {
			return nil, fmt.Errorf("rpc call %d/%d not accepted: %d", prog, proc, st)
		}
		return rep[off+4:], nil
	}
}

func (c *rpcConn) readRecord() ([]byte, error) {
	var out []byte
	for {
		var h [4]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(h[:])
		size := int(n &^ 0x80000000)
		if size > 4<<20 {
			return nil, fmt.Errorf("rpc fragment of %d bytes", size)
		}
		start := len(out)
		out = append(out, make([]byte, size)...)
		if _, err := io.ReadFull(c.r, out[start:]); err != nil {
			return nil, err
		}
		if n&0x80000000 != 0 {
			return out, nil
		}
	}
}

func xdrOpaque(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	b = append(b, v...)
	for i := len(v); i%4 != 0; i++ {
		b = append(b, 0)
	}
	return b
}

func xdrString(b []byte, s string) []byte { return xdrOpaque(b, []byte(s)) }

// xdrReader reads the results of a reply.
type xdrReader struct {
	b   []byte
	err error
}

func (r *xdrReader) u32() uint32 {
	if len(r.b) < 4 {
		r.err = io.ErrUnexpectedEOF
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) u64() uint64 { return uint64(r.u32())<<32 | uint64(r.u32()) }

func (r *xdrReader) skip(n int) {
	if len(r.b) < n {
		r.err = io.ErrUnexpectedEOF
		r.b = nil
		return
	}
	r.b = r.b[n:]
}

func (r *xdrReader) opaque() []byte {
	n := int(r.u32())
	if n > len(r.b) {
		r.err = io.ErrUnexpectedEOF
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.skip((n + 3) &^ 3)
	return v
}

// postOpAttr skips a post_op_attr (a fattr3 is 84 bytes).
func (r *xdrReader) postOpAttr() {
	if r.u32() != 0 {
		r.skip(84)
	}
}

// mount asks MOUNT for the export's root handle.
func mount(c *rpcConn, export string) ([]byte, error) {
	res, err := c.call(progMount, 3, mntProc, xdrString(nil, export))
	if err != nil {
		return nil, fmt.Errorf("MOUNT %s: %w", export, err)
	}
	r := &xdrReader{b: res}
	if st := r.u32(); st != 0 {
		return nil, fmt.Errorf("MOUNT %s: status %d", export, st)
	}
	fh := r.opaque()
	if r.err != nil || len(fh) == 0 {
		return nil, fmt.Errorf("MOUNT %s: bad reply", export)
	}
	return append([]byte(nil), fh...), nil
}

// replayer asks one server a recording's calls, for one node.
type replayer struct {
	c *rpcConn
	// fh is every handle learned, by path: from MOUNT, LOOKUP and
	// READDIRPLUS, as a real client learns them.
	fh map[string][]byte
	// Directory reads are replayed as the client made them (how many, how
	// big), but with this server's own cookies and verifier: a recorded
	// cookie means nothing to another server.
	dirCookie map[string]uint64
	dirVerf   map[string][8]byte
	// Counts of what happened.
	calls, extraLookups, errs, bytes int
}

func newReplayer(c *rpcConn, root []byte) *replayer {
	return &replayer{c: c, fh: map[string][]byte{"": root}, dirCookie: map[string]uint64{}, dirVerf: map[string][8]byte{}}
}

// handle finds the handle of p, looking up what the recording never did
// (a handle the kernel had cached from before the recording began).
func (rp *replayer) handle(p string) ([]byte, error) {
	if fh, ok := rp.fh[p]; ok {
		return fh, nil
	}
	dir, name := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	dfh, err := rp.handle(dir)
	if err != nil {
		return nil, err
	}
	rp.extraLookups++
	fh, st, err := rp.lookup(dir, dfh, name)
	if err != nil {
		return nil, err
	}
	if fh == nil {
		return nil, fmt.Errorf("LOOKUP %s: status %d", p, st)
	}
	return fh, nil
}

func (rp *replayer) lookup(dir string, dfh []byte, name string) ([]byte, uint32, error) {
	args := xdrOpaque(nil, dfh)
	args = xdrString(args, name)
	res, err := rp.c.call(progNFS, 3, procNums["LOOKUP"], args)
	if err != nil {
		return nil, 0, err
	}
	r := &xdrReader{b: res}
	st := r.u32()
	if st != nfsOK {
		return nil, st, nil
	}
	fh := append([]byte(nil), r.opaque()...)
	if r.err != nil {
		return nil, 0, errors.New("LOOKUP: bad reply")
	}
	rp.fh[join(dir, name)] = fh
	return fh, st, nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// do asks one recorded call. Only the transport failing is an error; an
// NFS error status is counted (a server that answers differently).
func (rp *replayer) do(o op) error {
	fh, err := rp.handle(o.Path)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) || strings.Contains(err.Error(), "not responding") {
			return err
		}
		rp.errs++ // the path is not in this server's tree
		return nil
	}
	rp.calls++
	proc := procNums[o.Proc]
	var args []byte
	args = xdrOpaque(args, fh)
	switch o.Proc {
	case "LOOKUP":
		_, st, err := rp.lookup(o.Path, fh, o.Name)
		if err != nil {
			return err
		}
		if st != nfsOK && st != nfsErrNoEnt {
			rp.errs++
		}
		return nil
	case "ACCESS":
		args = binary.BigEndian.AppendUint32(args, o.Mask)
	case "READ":
		args = binary.BigEndian.AppendUint64(args, o.Offset)
		args = binary.BigEndian.AppendUint32(args, o.Count)
	case "READDIR", "READDIRPLUS":
		cookie, verf := uint64(0), [8]byte{}
		if o.Offset != 0 {
			cookie, verf = rp.dirCookie[o.Path], rp.dirVerf[o.Path]
		}
		args = binary.BigEndian.AppendUint64(args, cookie)
		args = append(args, verf[:]...)
		if o.Proc == "READDIRPLUS" {
			args = binary.BigEndian.AppendUint32(args, o.Count/2) // dircount, as Linux asks
		}
		args = binary.BigEndian.AppendUint32(args, o.Count)
	}
	res, err := rp.c.call(progNFS, 3, proc, args)
	if err != nil {
		return err
	}
	rp.bytes += len(res)
	r := &xdrReader{b: res}
	st := r.u32()
	if st != nfsOK {
		rp.errs++
		return nil
	}
	if o.Proc == "READDIR" || o.Proc == "READDIRPLUS" {
		rp.readDir(o.Path, r, o.Proc == "READDIRPLUS")
	}
	return nil
}

// readDir takes the cookie to go on from and, from READDIRPLUS, the
// entries' handles.
func (rp *replayer) readDir(dir string, r *xdrReader, plus bool) {
	r.postOpAttr()
	var verf [8]byte
	if len(r.b) >= 8 {
		copy(verf[:], r.b)
	}
	r.skip(8)
	rp.dirVerf[dir] = verf
	for r.err == nil && r.u32() != 0 {
		r.u64() // fileid
		name := string(r.opaque())
		cookie := r.u64()
		if plus {
			r.postOpAttr()
			if r.u32() != 0 {
				fh := r.opaque()
				if r.err == nil && name != "." && name != ".." {
					rp.fh[join(dir, name)] = append([]byte(nil), fh...)
				}
			}
		}
		if r.err == nil {
			rp.dirCookie[dir] = cookie
		}
	}
}

package tftp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func rrq(name, mode string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, opRRQ)
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, mode...)
	b = append(b, 0)
	for _, o := range opts {
		b = append(b, o...)
		b = append(b, 0)
	}
	return b
}

func TestParseRequest(t *testing.T) {
	r, err := parseRequest(rrq("pxelinux.0", "OCTET", "BlkSize", "1468", "tsize", "0", "blksize", "512", "lonely"))
	if err != nil {
		t.Fatal(err)
	}
	if r.op != opRRQ || r.filename != "pxelinux.0" || r.mode != "octet" {
		t.Errorf("got %+v", r)
	}
	want := []option{{"blksize", "1468"}, {"tsize", "0"}}
	if fmt.Sprint(r.options) != fmt.Sprint(want) {
		t.Errorf("options %v, want %v (first value of a repeated option, unpaired name dropped)", r.options, want)
	}
	for name, b := range map[string][]byte{
		"empty":         nil,
		"opcode only":   {0, 1},
		"DATA":          {0, 3, 0, 1, 'x'},
		"no mode":       append(binary.BigEndian.AppendUint16(nil, opRRQ), "file\x00"...),
		"unterminated":  append(binary.BigEndian.AppendUint16(nil, opRRQ), "file\x00octet"...),
		"mail mode":     rrq("file", "mail"),
		"no terminator": append(rrq("file", "octet"), "blksize"...),
	} {
		if r, err := parseRequest(b); err == nil {
			t.Errorf("%s: parsed as %+v", name, r)
		}
	}
}

func TestNegotiate(t *testing.T) {
	p := negotiate([]option{{"windowsize", "1000"}, {"tsize", "0"}, {"blksize", "99999"}, {"timeout", "3"}, {"multicast", ""}}, 1234)
	if p.blksize != maxBlockSize || p.window != maxWindowSize || p.timeout != 3*time.Second {
		t.Errorf("got %+v", p)
	}
	want := []option{{"windowsize", "64"}, {"tsize", "1234"}, {"blksize", "65464"}, {"timeout", "3"}}
	if fmt.Sprint(p.oack) != fmt.Sprint(want) {
		t.Errorf("oack %v, want %v", p.oack, want)
	}
	// Values out of range are left out of the OACK: the client then uses
	// the default.
	p = negotiate([]option{{"blksize", "7"}, {"timeout", "0"}, {"windowsize", "x"}}, 1)
	if p.blksize != 512 || p.window != 1 || p.timeout != 0 || len(p.oack) != 0 {
		t.Errorf("got %+v", p)
	}
}

// FuzzParseRequest: any bytes give a request or an error, never a panic,
// and what negotiate makes of a request stays in the RFCs' ranges.
func FuzzParseRequest(f *testing.F) {
	f.Add(rrq("pxelinux.0", "octet", "blksize", "1468", "tsize", "0"))
	f.Add(rrq("a", "netascii", "windowsize", "8", "timeout", "1"))
	f.Add([]byte{0, 2, 'x', 0, 'o', 'c', 't', 'e', 't', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		p := negotiate(r.options, 100)
		if p.blksize < 8 || p.blksize > maxBlockSize || p.window < 1 || p.window > maxWindowSize || p.timeout < 0 || p.timeout > 255*time.Second {
			t.Fatalf("negotiated %+v from %q", p, b)
		}
	})
}

// FuzzAcked: whatever a client sends during a transfer, the server takes
// it as an ACK of one of the blocks in flight, as the client's ERROR, or
// ignores it; block numbers that wrap past 65535 map back to the right
// block.
func FuzzAcked(f *testing.F) {
	f.Add([]byte{0, opACK, 0, 1}, 0, 1)
	f.Add([]byte{0, opACK, 0, 0}, 0, 0)
	f.Add([]byte{0, opACK, 0xff, 0xff}, 65530, 65540)
	f.Add([]byte{0, opERROR, 0, 2, 'x', 0}, 3, 7)
	f.Add([]byte{0, opDATA, 0, 1}, 0, 4)
	f.Fuzz(func(t *testing.T, pkt []byte, from, window int) {
		if from < 0 || window < 0 || window > maxWindowSize || from > 1<<30 {
			return
		}
		to := from + window
		if window == 0 {
			from, to = 0, 0
		}
		k, ok, err := acked(pkt, from, to)
		if err != nil && (ok || len(pkt) < 4 || pkt[1] != opERROR) {
			t.Fatalf("error %v for %x", err, pkt)
		}
		if !ok {
			return
		}
		if to == 0 {
			if k != 0 {
				t.Fatalf("OACK acknowledged as block %d", k)
			}
			return
		}
		if k <= from || k > to || uint16(k) != uint16(pkt[2])<<8|uint16(pkt[3]) {
			t.Fatalf("ACK %x with blocks (%d, %d] in flight taken as block %d", pkt, from, to, k)
		}
	})
}

// rawClient speaks TFTP packet by packet, to test what ready-made clients
// never do: windows, lost and duplicate ACKs, errors, block wrap.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
	srv  *net.UDPAddr // the transfer's address, learnt from its first packet
	buf  []byte
}

func newRawClient(t *testing.T, addr string) *rawClient {
	return newRawClientFrom(t, addr, net.IPv4(127, 0, 0, 1))
}

// newRawClientFrom is a client with its own loopback source address.
func newRawClientFrom(t *testing.T, addr string, from net.IP) *rawClient {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: from})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ua, _ := net.ResolveUDPAddr("udp4", addr)
	c := &rawClient{t: t, conn: conn, srv: ua, buf: make([]byte, 70000)}
	return c
}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, c.srv); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) ack(block uint16) {
	c.send(binary.BigEndian.AppendUint16([]byte{0, opACK}, block))
}

// recv returns the next packet's opcode, block (or error code) and payload.
func (c *rawClient) recv(wait time.Duration) (op, block uint16, payload []byte, err error) {
	c.conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.conn.ReadFromUDP(c.buf)
	if err != nil {
		return 0, 0, nil, err
	}
	c.srv = from
	if n < 4 {
		c.t.Fatalf("short packet %q", c.buf[:n])
	}
	op = binary.BigEndian.Uint16(c.buf)
	if op == opOACK {
		return op, 0, append([]byte(nil), c.buf[2:n]...), nil
	}
	return op, binary.BigEndian.Uint16(c.buf[2:]), append([]byte(nil), c.buf[4:n]...), nil
}

func (c *rawClient) mustRecv(wantOp uint16) (block uint16, payload []byte) {
	c.t.Helper()
	op, block, payload, err := c.recv(3 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for opcode %d: %v", wantOp, err)
	}
	if op != wantOp {
		c.t.Fatalf("got opcode %d (%d %q), want %d", op, block, payload, wantOp)
	}
	return block, payload
}

func TestWindowSize(t *testing.T) {
	f := start(t)
	c := newRawClient(t, f.addr)
	c.send(rrq("images/img/3/vmlinuz", "octet", "blksize", "1024", "windowsize", "4", "tsize", "0"))
	_, oack := c.mustRecv(opOACK)
	if want := fmt.Sprintf("blksize\x001024\x00windowsize\x004\x00tsize\x00%d\x00", len(f.kernel)); string(oack) != want {
		t.Fatalf("OACK %q, want %q", oack, want)
	}
	c.ack(0)
	var got []byte
	next := uint16(1)
	for done := false; !done; {
		// A whole window arrives before any ACK.
		var blocks []uint16
		for i := 0; i < 4 && !done; i++ {
			b, data := c.mustRecv(opDATA)
			if b != next {
				t.Fatalf("block %d, want %d", b, next)
			}
			blocks = append(blocks, b)
			got = append(got, data...)
			next++
			done = len(data) < 1024
		}
		c.ack(blocks[len(blocks)-1])
	}
	if !bytes.Equal(got, f.kernel) {
		t.Fatalf("got %d bytes, want %d", len(got), len(f.kernel))
	}
	// Acknowledging part of a window makes the server resend from there.
	c = newRawClient(t, f.addr)
	c.send(rrq("images/img/3/vmlinuz", "octet", "blksize", "512", "windowsize", "3"))
	c.mustRecv(opOACK)
	c.ack(0)
	for want := uint16(1); want <= 3; want++ {
		if b, _ := c.mustRecv(opDATA); b != want {
			t.Fatalf("block %d, want %d", b, want)
		}
	}
	c.ack(1) // blocks 2 and 3 "lost"
	for want := uint16(2); want <= 4; want++ {
		if b, data := c.mustRecv(opDATA); b != want || !bytes.Equal(data, f.kernel[(want-1)*512:want*512]) {
			t.Fatalf("after a partial ACK: block %d, want %d", b, want)
		}
	}
}

func TestLostAndDuplicateACKs(t *testing.T) {
	f := start(t)
	c := newRawClient(t, f.addr)
	c.send(rrq("pxelinux.cfg/default", "octet"))
	b, first := c.mustRecv(opDATA)
	if b != 1 {
		t.Fatalf("block %d", b)
	}
	// No ACK: the block comes again after the timeout (1 s here).
	t0 := time.Now()
	b, again := c.mustRecv(opDATA)
	if b != 1 || !bytes.Equal(first, again) {
		t.Fatalf("resent block %d %q, want block 1", b, again)
	}
	if d := time.Since(t0); d < 500*time.Millisecond {
		t.Errorf("resent after %v, before the timeout", d)
	}
	c.ack(1)
	// The config is one block: the transfer is over, and a duplicate ACK
	// brings nothing (no Sorcerer's Apprentice).
	c.ack(1)
	if op, b, _, err := c.recv(300 * time.Millisecond); err == nil {
		t.Errorf("after the last ACK: opcode %d block %d", op, b)
	}

	// A duplicate ACK mid-transfer is not answered either: only the
	// timeout resends.
	c = newRawClient(t, f.addr)
	c.send(rrq("images/img/3/vmlinuz", "octet"))
	c.mustRecv(opDATA)
	c.ack(1)
	c.mustRecv(opDATA) // block 2
	c.ack(1)
	if op, b, _, err := c.recv(300 * time.Millisecond); err == nil {
		t.Errorf("a duplicate ACK 1 brought opcode %d block %d", op, b)
	}
	// The client gives up with an ERROR: the server stops at once.
	c.send(appendError(nil, 0, "bye"))
	if op, b, _, err := c.recv(1500 * time.Millisecond); err == nil {
		t.Errorf("after the client's ERROR: opcode %d block %d", op, b)
	}
}

func TestRequestErrors(t *testing.T) {
	f := start(t)
	for _, tc := range []struct {
		name string
		req  []byte
		code uint16
	}{
		{"write", append(binary.BigEndian.AppendUint16(nil, opWRQ), "pxelinux.0\x00octet\x00"...), errCodeAccess},
		{"mail mode", rrq("pxelinux.0", "mail"), errCodeIllegalOp},
		{"garbage", []byte{0, 1, 'x'}, errCodeIllegalOp},
		{"traversal", rrq("../../etc/passwd", "octet"), errCodeAccess},
		{"missing", rrq("nothing-here", "octet"), errCodeNotFound},
	} {
		c := newRawClient(t, f.addr)
		c.send(tc.req)
		code, msg := c.mustRecv(opERROR)
		if code != tc.code || strings.Contains(string(msg), f.state) || strings.Contains(string(msg), os.TempDir()) {
			t.Errorf("%s: error %d %q, want code %d and no server path", tc.name, code, msg, tc.code)
		}
	}
}

// TestBlockWrap: a file of more than 65535 blocks, as a 64 MiB kernel is
// at blksize 512, counts on from 65535 to 0.
func TestBlockWrap(t *testing.T) {
	if testing.Short() {
		t.Skip("65,537 round trips: not in -short")
	}
	f := start(t)
	c := newRawClient(t, f.addr)
	// At blksize 56 the 3.9 MB test kernel is 69,643 blocks.
	bs := 56
	if len(f.kernel)/bs < 65536 {
		t.Fatalf("test kernel too small for a wrap at blksize %d", bs)
	}
	c.send(rrq("images/img/3/vmlinuz", "octet", "blksize", fmt.Sprint(bs)))
	c.mustRecv(opOACK)
	c.ack(0)
	var got []byte
	var wrapped bool
	for want := uint16(1); ; want++ {
		b, data := c.mustRecv(opDATA)
		if b != want {
			t.Fatalf("block %d, want %d", b, want)
		}
		wrapped = wrapped || b == 0
		got = append(got, data...)
		c.ack(b)
		if len(data) < bs {
			break
		}
	}
	if !wrapped || !bytes.Equal(got, f.kernel) {
		t.Fatalf("wrapped %v, %d bytes of %d", wrapped, len(got), len(f.kernel))
	}
}

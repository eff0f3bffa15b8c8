package tftp

import "bytes"

// A source yields a file's bytes block by block. Boot files are shared by
// every transfer (one cached copy, served from memory to a whole boot
// storm); a transfer in netascii mode converts its blocks as it sends them
// instead of converting a copy of the file, so no request costs bootd a
// file's worth of memory.
type source interface {
	// size is the number of bytes the client receives (tsize).
	size() int
	// mark says that blocks before i will not be asked for again (they are
	// acknowledged).
	mark(i int)
	// block copies block i (1-based, i >= the last mark) into dst, which
	// is the negotiated block size long, and returns the number of bytes.
	block(dst []byte, i int) int
}

type octets []byte

func (o octets) size() int { return len(o) }
func (o octets) mark(int)  {}
func (o octets) block(dst []byte, i int) int {
	off := (i - 1) * len(dst)
	return copy(dst, o[min(off, len(o)):])
}

// netascii is RFC 764's line convention as TFTP's netascii mode sends it
// (and as pin/tftp's netascii.ToReader does): LF becomes CR LF and CR
// becomes CR NUL.
type asciiSource struct {
	data    []byte
	n       int
	blksize int
	at      asciiPos // where the mark is
	cur     asciiPos // where the next sequential block starts
	scratch []byte
}

// asciiPos is a position in the converted stream: the block that starts
// there, the input offset, and the second byte of an expansion still owed.
type asciiPos struct {
	blk  int
	in   int
	owed byte
	owes bool
}

// netasciiSize is the size of data once converted.
func netasciiSize(data []byte) int {
	return len(data) + bytes.Count(data, []byte{'\n'}) + bytes.Count(data, []byte{'\r'})
}

func newNetascii(data []byte, blksize int) *asciiSource {
	return &asciiSource{data: data, n: netasciiSize(data), blksize: blksize, at: asciiPos{blk: 1}, cur: asciiPos{blk: 1}}
}

func (a *asciiSource) size() int { return a.n }

func (a *asciiSource) mark(i int) {
	if i <= a.at.blk {
		return
	}
	a.seek(i)
	a.at = a.cur
}

func (a *asciiSource) block(dst []byte, i int) int {
	a.seek(i)
	return a.fill(dst)
}

// seek moves cur to the start of block i, from the mark when i is behind.
func (a *asciiSource) seek(i int) {
	if i < a.cur.blk {
		a.cur = a.at
	}
	for a.cur.blk < i {
		if a.scratch == nil {
			a.scratch = make([]byte, a.blksize)
		}
		a.fill(a.scratch)
	}
}

// fill converts the block at cur into dst (its length is the block size)
// and moves cur to the next block.
func (a *asciiSource) fill(dst []byte) int {
	p := &a.cur
	n := 0
	for n < len(dst) {
		if p.owes {
			dst[n] = p.owed
			p.owes = false
		} else if p.in < len(a.data) {
			c := a.data[p.in]
			p.in++
			switch c {
			case '\n':
				c, p.owed, p.owes = '\r', '\n', true
			case '\r':
				c, p.owed, p.owes = '\r', 0, true
			}
			dst[n] = c
		} else {
			break
		}
		n++
	}
	p.blk++
	return n
}

package nfs

import (
	"encoding/binary"
	"errors"
)

// The hot replies (READ, GETATTR, LOOKUP, READDIRPLUS) are built by
// appending to one pooled buffer; a reflection-based XDR codec costs an
// allocation per field and a copy per layer, which is the difference
// between a read-only root that keeps up with a boot storm and one that
// does not.

var errShort = errors.New("xdr: message too short")

// xdrReader decodes XDR from a request. The first error sticks; callers
// check r.err once after reading all arguments.
type xdrReader struct {
	b   []byte
	err error
}

func (r *xdrReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *xdrReader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// fixed reads n bytes of fixed-length opaque data (padded to 4).
func (r *xdrReader) fixed(n int) []byte {
	p := (n + 3) &^ 3
	if n < 0 || len(r.b) < p {
		r.fail(errShort)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[p:]
	return v
}

// opaque reads variable-length opaque data of at most max bytes.
func (r *xdrReader) opaque(max int) []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if n > uint32(max) {
		r.fail(errors.New("xdr: opaque longer than allowed"))
		return nil
	}
	return r.fixed(int(n))
}

// xdrWriter appends XDR to a byte slice.
type xdrWriter struct{ b []byte }

func (w *xdrWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *xdrWriter) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *xdrWriter) bool(v bool) {
	if v {
		w.u32(1)
	} else {
		w.u32(0)
	}
}

func (w *xdrWriter) opaque(p []byte) {
	w.u32(uint32(len(p)))
	w.b = append(w.b, p...)
	w.pad(len(p))
}

func (w *xdrWriter) str(s string) {
	w.u32(uint32(len(s)))
	w.b = append(w.b, s...)
	w.pad(len(s))
}

func (w *xdrWriter) pad(n int) {
	for i := n; i&3 != 0; i++ {
		w.b = append(w.b, 0)
	}
}

// xdrLen is the encoded size of variable-length opaque data of n bytes.
func xdrLen(n int) int { return 4 + (n+3)&^3 }

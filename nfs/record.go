package nfs

import (
	"net/netip"
	"time"
)

// Op is one NFS call as a recording sees it (Config.Record): what a client
// asked for, named by path inside the export rather than by handle, so
// that a replay can ask any server, bootd or another, the same questions.
// bench/storm replays the calls a real node made during its boot.
type Op struct {
	Time   time.Time      `json:"t"`
	Client netip.AddrPort `json:"client"`
	Proc   string         `json:"proc"`
	// Path is the object, relative to the export's root ("" is the root);
	// Name, for LOOKUP, the name looked up in it.
	Path string `json:"path"`
	Name string `json:"name,omitempty"`
	// Offset and Count: READ's bytes; READDIR(PLUS)'s cookie and the
	// reply size asked (maxcount).
	Offset uint64 `json:"offset,omitempty"`
	Count  uint32 `json:"count,omitempty"`
	// Mask: ACCESS's bits.
	Mask uint32 `json:"mask,omitempty"`
}

// recorded are the calls a recording keeps: every read-only one.
var recorded = map[uint32]bool{procGetattr: true, procLookup: true, procAccess: true, procReadlink: true,
	procRead: true, procReaddir: true, procReaddirplus: true, procFsstat: true, procFsinfo: true, procPathconf: true}

// record tells Config.Record of a read-only NFS call, decoding its
// arguments from a copy of the reader (the call itself reads them again).
func (c *call) record() {
	if !recorded[c.h.proc] {
		return
	}
	name := procNames[programNFS][c.h.proc]
	r := *c.args
	fh := r.opaque(64)
	t, idx, st := c.resolve(fh)
	if r.err != nil || st != nfs3OK {
		return
	}
	op := Op{Time: time.Now(), Client: c.peer, Proc: name, Path: t.path(idx)}
	switch c.h.proc {
	case procLookup:
		op.Name = string(r.opaque(255))
	case procAccess:
		op.Mask = r.u32()
	case procRead:
		op.Offset, op.Count = r.u64(), r.u32()
	case procReaddir:
		op.Offset = r.u64()
		r.fixed(8)
		op.Count = r.u32()
	case procReaddirplus:
		op.Offset = r.u64()
		r.fixed(8)
		r.u32() // dircount
		op.Count = r.u32()
	}
	if r.err != nil {
		return
	}
	c.s.cfg.Record(op)
}

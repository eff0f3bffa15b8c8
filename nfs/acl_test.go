package nfs

import "testing"

// aclEntry is one POSIX ACL entry as NFSACL carries it.
type aclEntry struct{ tag, id, perm uint32 }

// readACL decodes one ACL of a GETACL reply: its count, then the entries.
func readACL(r *xdrReader) (count uint32, entries []aclEntry) {
	count = r.u32()
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		entries = append(entries, aclEntry{r.u32(), r.u32(), r.u32()})
	}
	return count, entries
}

// TestNFSACL answers GETACL as the kernel's nfsd does for files without
// ACLs (the minimal ACL the mode implies, no default ACL), refuses SETACL,
// and checks handles and masks as every NFS procedure does. Linux 6.12's
// overlayfs asks for the lower layer's ACL when a non-owner opens or runs a
// file; without an answer, Debian 13 nodes could not run programs as any
// user but root.
func TestNFSACL(t *testing.T) {
	fx := makeFixture(t, false)
	rc := dialRaw(t, serve(t, fx.store, nil))
	root, st := rc.mount("/demo/1")
	if st != mnt3OK {
		t.Fatalf("MNT: %d", st)
	}
	getacl := func(fh []byte, mask uint32) *xdrReader {
		t.Helper()
		rep := rc.call(progNFSACL, 3, aclProcGetacl, enc(fh, mask))
		if rep.denied || rep.stat != acceptSuccess {
			t.Fatalf("GETACL: denied=%v stat=%d", rep.denied, rep.stat)
		}
		return rep.body
	}

	wall, wallAttr := rc.lookupPath(root, "bin", "wall")
	r := getacl(wall, aclMaskACL|aclMaskACLCnt)
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("GETACL bin/wall: status %d", st)
	}
	if a, ok := readPostOp(r); !ok || a.fileid != wallAttr.fileid || a.mode != wallAttr.mode {
		t.Errorf("GETACL attributes %+v, want those of bin/wall %+v", a, wallAttr)
	}
	if m := r.u32(); m != aclMaskACL|aclMaskACLCnt {
		t.Errorf("mask %#x, want the one asked for", m)
	}
	count, got := readACL(r)
	want := []aclEntry{
		{aclUserObj, wallAttr.uid, 7},
		{aclGroupObj, wallAttr.gid, 5},
		{aclMask, 0, 5},
		{aclOther, 0, 5},
	}
	if count != 4 || len(got) != 4 {
		t.Fatalf("access ACL: count %d, entries %+v; want %+v", count, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("access ACL entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if count, got := readACL(r); count != 0 || len(got) != 0 {
		t.Errorf("default ACL of a file: count %d, %+v; want none", count, got)
	}
	if r.err != nil || len(r.b) != 0 {
		t.Errorf("reply: err %v, %d bytes left over", r.err, len(r.b))
	}

	// A directory, asked for both ACLs: the access one from its mode, an
	// empty default one.
	r = getacl(root, aclMaskACL|aclMaskACLCnt|aclMaskDfACL|aclMaskDfACLCnt)
	if st := r.u32(); st != nfs3OK {
		t.Fatalf("GETACL /: status %d", st)
	}
	readPostOp(r)
	r.u32()
	if _, got := readACL(r); len(got) != 4 || got[0].perm != 7 || got[3].perm != 5 {
		t.Errorf("access ACL of / (0755): %+v", got)
	}
	if count, got := readACL(r); count != 0 || len(got) != 0 {
		t.Errorf("default ACL of /: count %d, %+v; want none", count, got)
	}

	// Counts only: the count without entries.
	secret, _ := rc.lookupPath(root, "data", "secret")
	r = getacl(secret, aclMaskACLCnt)
	r.u32()
	readPostOp(r)
	r.u32()
	if count, got := readACL(r); count != 4 || len(got) != 0 {
		t.Errorf("count-only GETACL: count %d, entries %+v; want 4 and none", count, got)
	}

	if st := getacl(secret, 0x100).u32(); st != nfs3ErrInval {
		t.Errorf("GETACL with an unknown mask bit: status %d, want INVAL", st)
	}
	if st := getacl([]byte("forged"), aclMaskACL).u32(); st != nfs3ErrBadHandle {
		t.Errorf("GETACL with a forged handle: status %d, want BADHANDLE", st)
	}
	rep := rc.call(progNFSACL, 3, aclProcSetacl, enc(secret, uint32(aclMaskACL), uint32(0), uint32(0), uint32(0), uint32(0)))
	if rep.stat != acceptSuccess {
		t.Fatalf("SETACL: stat %d", rep.stat)
	}
	if st := rep.body.u32(); st != nfs3ErrROFS {
		t.Errorf("SETACL: status %d, want ROFS", st)
	}
	if rep := rc.call(progNFSACL, 3, 3, nil); rep.stat != acceptProcUnavail {
		t.Errorf("NFSACL proc 3: %+v, want PROC_UNAVAIL", rep)
	}
	if rep := rc.call(progNFSACL, 3, aclProcGetacl, nil); rep.stat != acceptGarbageArgs {
		t.Errorf("GETACL without arguments: %+v, want GARBAGE_ARGS", rep)
	}
}

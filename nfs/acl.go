package nfs

// NFSACL v3 (program 100227), the side protocol Linux's NFSv3 client uses
// for POSIX ACLs. It has no RFC; the wire format is Sun's, as Linux's
// fs/nfs_common/nfsacl.c encodes it.
//
// A read-only export of a Debian root has no ACLs, so why answer at all?
// Because of overlayfs: a node's root is a tmpfs upper over this export,
// and for a caller who is not a file's owner the kernel's permission check
// on the overlay asks the lower layer for its access ACL. Linux 6.12 passes
// the NFS client's -EOPNOTSUPP (what PROG_UNAVAIL becomes) up as the exec's
// result, so on Debian 13 every program run by a user other than root
// failed with "Operation not supported" (dbus-daemon first). Answering
// GETACL with the minimal ACL the mode bits imply, as the kernel's own
// nfsd does, tells the client "no ACL beyond the mode", and the check falls
// back to the mode bits. SETACL is refused: the export is read-only.

const (
	progNFSACL = 100227

	aclProcNull   = 0
	aclProcGetacl = 1
	aclProcSetacl = 2

	// GETACL mask bits: which ACLs, and which counts, the caller wants.
	aclMaskACL      = 0x1
	aclMaskACLCnt   = 0x2
	aclMaskDfACL    = 0x4
	aclMaskDfACLCnt = 0x8

	// POSIX ACL entry tags (linux/posix_acl.h), as sent on the wire.
	aclUserObj  = 0x01
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
)

func (c *call) nfsacl() {
	switch c.h.proc {
	case aclProcNull:
		c.ok()
	case aclProcGetacl:
		c.getacl()
	case aclProcSetacl:
		// The arguments (a handle, a mask and two ACLs) need not be read:
		// the answer is the same for every one of them.
		t, i, ok := c.object(c.args.opaque(64))
		if !ok {
			return
		}
		c.ok()
		c.w.u32(nfs3ErrROFS)
		c.postOpAttr(t, i)
	default:
		c.procUnavail()
	}
}

func (c *call) getacl() {
	fh := c.args.opaque(64)
	mask := c.args.u32()
	t, i, ok := c.object(fh)
	if !ok {
		return
	}
	if mask&^(aclMaskACL|aclMaskACLCnt|aclMaskDfACL|aclMaskDfACLCnt) != 0 {
		c.ok()
		c.w.u32(nfs3ErrInval)
		c.postOpAttr(t, i)
		return
	}
	a := &t.e(i).attr
	c.ok()
	c.w.u32(nfs3OK)
	c.postOpAttr(t, i)
	c.w.u32(mask)
	// The access ACL: the four entries (owner, group, mask, other) the
	// kernel's nfsd sends for a file without an ACL. The client folds them
	// back into "no ACL".
	if mask&(aclMaskACL|aclMaskACLCnt) != 0 {
		c.w.u32(4)
		if mask&aclMaskACL == 0 {
			c.w.u32(0)
		} else {
			c.w.u32(4)
			for _, e := range [4][3]uint32{
				{aclUserObj, a.uid, a.mode >> 6 & 7},
				{aclGroupObj, a.gid, a.mode >> 3 & 7},
				{aclMask, 0, a.mode >> 3 & 7},
				{aclOther, 0, a.mode & 7},
			} {
				c.w.u32(e[0])
				c.w.u32(e[1])
				c.w.u32(e[2])
			}
		}
	} else {
		c.w.u32(0)
		c.w.u32(0)
	}
	// No default ACL, on directories or anything else: an empty list.
	c.w.u32(0)
	c.w.u32(0)
}

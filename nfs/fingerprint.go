package nfs

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// Fingerprint is a digest of everything this server answers about a
// generation's tree except file contents: every entry's file handle,
// attributes (fattr3, fileid and fsid included) and symlink target, in
// entry order. Two masters whose fingerprints of NAME/GEN agree give a
// node the same handles and attributes for every object, so the node can
// move from one to the other without a stale handle. `bootd image push`
// records it and `bootd image pull` refuses a tree that differs.
func Fingerprint(name string, gen int, root string) (string, error) {
	t, err := buildTree(name, gen, root)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	var b []byte
	for i := uint32(0); i < t.count(); i++ {
		e := t.e(i)
		a := &e.attr
		b = append(b[:0], t.handle(i)...)
		for _, v := range []uint32{a.typ, a.mode, a.nlink, a.uid, a.gid, a.major, a.minor} {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		for _, v := range []uint64{a.size, a.used, a.fileid} {
			b = binary.BigEndian.AppendUint64(b, v)
		}
		for _, ts := range [3]nfstime{a.atime, a.mtime, a.ctime} {
			b = binary.BigEndian.AppendUint32(b, ts.sec)
			b = binary.BigEndian.AppendUint32(b, ts.nsec)
		}
		if a.typ == nf3Lnk {
			target, err := os.Readlink(filepath.Join(root, t.path(i)))
			if err != nil {
				return "", fmt.Errorf("fingerprinting %s generation %d: %w", name, gen, err)
			}
			b = append(b, target...)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(b)))
		h.Write(b)
	}
	return fmt.Sprintf("sha256:%x", h.Sum(nil)), nil
}

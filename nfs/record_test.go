package nfs

import (
	"io"
	"strings"
	"sync"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// TestRecord: a recording names each call's object by path, with READ's
// offsets and counts and LOOKUP's names, and keeps nothing that changes.
func TestRecord(t *testing.T) {
	fx := makeFixture(t, false)
	var mu sync.Mutex
	var ops []Op
	addr := serve(t, fx.store, func(c *Config) {
		c.Record = func(op Op) { mu.Lock(); ops = append(ops, op); mu.Unlock() }
	})
	c, err := rpc.DialTCP("tcp", addr, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	target, err := (&nfsc.Mount{Client: c}).Mount("/demo/1", rpc.NewAuthUnix("test", 0, 0).Auth())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := target.ReadDirPlus("/data"); err != nil {
		t.Fatal(err)
	}
	f, err := target.Open("/data/big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(f); err != nil {
		t.Fatal(err)
	}
	target.Mkdir("/data/new", 0o755) // refused: not recorded
	mu.Lock()
	defer mu.Unlock()
	var seen []string
	var read uint64
	for _, op := range ops {
		switch {
		case op.Proc == "LOOKUP" && op.Path == "data" && op.Name == "big":
			seen = append(seen, "lookup")
		case op.Proc == "READDIRPLUS" && op.Path == "data" && op.Count > 0:
			seen = append(seen, "readdirplus")
		case op.Proc == "READ" && op.Path == "data/big":
			if op.Offset != read || op.Count == 0 {
				t.Errorf("READ at %d for %d, want at %d", op.Offset, op.Count, read)
			}
			read += uint64(op.Count)
		case op.Proc == "MKDIR" || !op.Client.IsValid() || op.Time.IsZero():
			t.Errorf("recorded %+v", op)
		}
	}
	if s := strings.Join(seen, " "); !strings.Contains(s, "readdirplus") || !strings.Contains(s, "lookup") || read == 0 {
		t.Errorf("recorded %s, %d bytes read, from %d ops: %+v", s, read, len(ops), ops)
	}
}

package nfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// TestGoNFSClient drives the export with go-nfs-client, an independent
// NFSv3 implementation.
func TestGoNFSClient(t *testing.T) {
	fx := makeFixture(t, false)
	addr := serve(t, fx.store, nil)
	c, err := rpc.DialTCP("tcp", addr, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := &nfsc.Mount{Client: c}
	target, err := m.Mount("/demo/1", rpc.NewAuthUnix("test", 0, 0).Auth())
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	ents, err := target.ReadDirPlus("/")
	if err != nil {
		t.Fatalf("readdirplus: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "bin data dev escape etc run tmp up usr" { // the client hides . and ..
		t.Errorf("root lists %q", got)
	}
	fi, _, err := target.Lookup("/bin/sudo")
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if a := fi.(*nfsc.Fattr); a.FileMode != 0o4755 {
		t.Errorf("bin/sudo mode on the wire %#o, want 04755", a.FileMode)
	}
	f, err := target.Open("/data/big")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	want, _ := os.ReadFile(filepath.Join(fx.root, "data/big"))
	if !bytes.Equal(got, want) {
		t.Errorf("read %d bytes that differ from the %d on disk", len(got), len(want))
	}
	if _, err := target.Mkdir("/newdir", 0o755); err == nil || !strings.Contains(err.Error(), "ROFS") {
		t.Errorf("mkdir on the export: %v, want a read-only file system error", err)
	}
	if err := target.Remove("/etc/hostname"); err == nil {
		t.Error("remove on the export succeeded")
	}
	if _, err := os.Stat(filepath.Join(fx.root, "etc/hostname")); err != nil {
		t.Errorf("the export lost a file: %v", err)
	}
}

// TestLibnfs uses libnfs-utils, the client the benchmarks use.
func TestLibnfs(t *testing.T) {
	ls := needTool(t, "nfs-ls")
	cat := needTool(t, "nfs-cat")
	fx := makeFixture(t, true)
	addr := serve(t, fx.store, nil)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	url := func(p string) string {
		return "nfs://127.0.0.1" + p + "?version=3&nfsport=" + port + "&mountport=" + port
	}
	out, err := exec.Command(ls, "-R", url("/demo/1")).CombinedOutput()
	if err != nil {
		t.Fatalf("nfs-ls -R: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var want int
	filepath.Walk(fx.root, func(string, os.FileInfo, error) error { want++; return nil })
	if len(lines) != want-1 { // the walk counts the root itself
		t.Errorf("nfs-ls -R printed %d entries, the tree has %d", len(lines), want-1)
	}
	if !strings.Contains(string(out), "many/d199/f100") {
		t.Errorf("nfs-ls -R output lacks the last file")
	}
	got, err := exec.Command(cat, url("/demo/current/data/big")).Output()
	if err != nil {
		t.Fatalf("nfs-cat: %v", err)
	}
	wantBytes, _ := os.ReadFile(filepath.Join(fx.root, "data/big"))
	if !bytes.Equal(got, wantBytes) {
		t.Errorf("nfs-cat gave %d bytes, want the %d on disk", len(got), len(wantBytes))
	}
}

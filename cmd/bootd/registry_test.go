package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// A second master that pulled the generation through a registry answers
// a node with the first master's handles: the same handles for the same
// paths, the same attributes, and the file's bytes for a handle it never
// gave out. What a node needs to move to it when the first one fails.
func TestSecondMasterThroughARegistry(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image pull needs root")
	}
	reg := registry(t)
	stateA, stateB := t.TempDir(), t.TempDir()
	makeImage(t, stateA, 500)
	root := filepath.Join(stateA, "images", "demo", "1", "root")
	os.Link(filepath.Join(root, "etc", "hostname"), filepath.Join(root, "usr", "hostname-link"))
	os.Symlink("../etc/hostname", filepath.Join(root, "usr", "rel"))
	syscall.Chmod(filepath.Join(root, "usr", "d01"), 0o1777)
	boot := filepath.Join(stateA, "images", "demo", "1", "boot")
	os.MkdirAll(boot, 0o755)
	os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(boot, "initrd.img"), []byte("initrd"), 0o644)

	addrA, addrB := freePort(t), freePort(t)
	a := startBootd(t, stateA, addrA)
	bootd := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bootdBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("bootd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := bootd("image", "push", "demo", reg+"/bootd/demo", "--config", a.config)
	if !strings.Contains(out, reg+"/bootd/demo:1") || !strings.Contains(out, reg+"/bootd/demo:latest") {
		t.Errorf("push output:\n%s", out)
	}
	// B runs already, with nothing to serve: a pulled generation is
	// served without a restart.
	b := startBootd(t, stateB, addrB)
	bootd("image", "pull", reg+"/bootd/demo", "--config", b.config)
	// Again: nothing to do, the same tree.
	if out := bootd("image", "pull", reg+"/bootd/demo:1", "--config", b.config); !strings.Contains(out, "here already") {
		t.Errorf("second pull:\n%s", out)
	}

	// A generation's boot files changed on A (initrd build --force): B
	// says so rather than keep serving others.
	os.WriteFile(filepath.Join(boot, "initrd.img"), []byte("initrd 2"), 0o644)
	bootd("image", "push", "demo", reg+"/bootd/demo", "--config", a.config)
	if out, err := exec.Command(bootdBin, "image", "pull", reg+"/bootd/demo", "--config", b.config).CombinedOutput(); err == nil || !strings.Contains(string(out), "other boot files") {
		t.Errorf("pull of the same generation with another initrd: %v\n%s", err, out)
	}

	ta, tb := mountTarget(t, addrA, "/demo"), mountTarget(t, addrB, "/demo")
	for _, p := range []string{"/etc/hostname", "/usr/hostname-link", "/usr/rel", "/usr/d01", "/usr/d07/f00457", "/etc", "/"} {
		fa, ha, err := ta.Lookup(p)
		if err != nil {
			t.Fatalf("A: lookup %s: %v", p, err)
		}
		fb, hb, err := tb.Lookup(p)
		if err != nil {
			t.Fatalf("B: lookup %s: %v", p, err)
		}
		if !bytes.Equal(ha, hb) {
			t.Errorf("%s: handle %x on A, %x on B", p, ha, hb)
		}
		if sa, sb := fmt.Sprintf("%+v", fa), fmt.Sprintf("%+v", fb); sa != sb {
			t.Errorf("%s: attributes differ:\nA %s\nB %s", p, sa, sb)
		}
	}
	// A's handle, read from B.
	_, h, _ := ta.Lookup("/usr/d07/f00457")
	c, err := rpc.DialTCP("tcp", addrB, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tgt, err := nfsc.NewTargetWithClient(c, rpc.NewAuthUnix("node", 0, 0).Auth(), h, "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr, err := tgt.GetAttr(h); err != nil || attr.Filesize != 3 {
		t.Errorf("GETATTR on B with A's handle: %+v %v", attr, err)
	}
}

// registry runs Debian's docker-registry on 127.0.0.1.
func registry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is not installed (scripts/deps.sh installs it)")
	}
	addr, dir := freePort(t), t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %q}\n", dir, addr)), 0o644)
	cmd := exec.Command(bin, "serve", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if r, err := http.Get("http://" + addr + "/v2/"); err == nil {
			r.Body.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("docker-registry did not come up")
	return ""
}

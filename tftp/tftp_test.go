package tftp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

type fixture struct {
	addr   string
	state  string
	kernel []byte
	loader []byte
	events *events.Log
	srv    *Server
}

func start(t *testing.T, mod ...func(*Config)) *fixture {
	t.Helper()
	state := t.TempDir()
	st := store.New(state)
	os.MkdirAll(st.RootDir("img", 3), 0o755)
	os.MkdirAll(st.BootDir("img", 3), 0o755)
	kernel := bytes.Repeat([]byte("kernel-bytes-"), 300000) // ~3.9 MB: many blocks
	os.WriteFile(filepath.Join(st.BootDir("img", 3), "vmlinuz"), kernel, 0o644)
	os.WriteFile(filepath.Join(st.BootDir("img", 3), "initrd.img"), []byte("initrd"), 0o644)
	if err := st.Publish("img", 3); err != nil {
		t.Fatal(err)
	}
	loaderDir := t.TempDir()
	loader := []byte("pxelinux loader")
	os.WriteFile(filepath.Join(loaderDir, "pxelinux.0"), loader, 0o644)
	table, err := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:00:00:01", Hostname: "n1", Append: "quiet"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := events.New(64)
	cfg := Config{
		Planner: boot.NewPlanner(boot.Options{Nodes: table, BootUnknown: true, Defaults: nodes.Defaults{Image: "img", Console: "ttyS0,115200n8"},
			Store: st, NFS: netip.MustParseAddrPort("10.0.0.1:2049"),
			Loaders: map[string]string{
				"pxelinux.0":  filepath.Join(loaderDir, "pxelinux.0"),
				"ldlinux.c32": filepath.Join(loaderDir, "missing.c32"),
			}}),
		Events: evs,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, m := range mod {
		m(&cfg)
	}
	srv := New(cfg)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, conn) }()
	t.Cleanup(func() { cancel(); <-done })
	return &fixture{addr: conn.LocalAddr().String(), state: state, kernel: kernel, loader: loader, events: evs, srv: srv}
}

func get(t *testing.T, addr, name string, blksize int) ([]byte, error) {
	t.Helper()
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), err
}

func TestServesBootTree(t *testing.T) {
	f := start(t)
	if b, err := get(t, f.addr, "pxelinux.0", 0); err != nil || !bytes.Equal(b, f.loader) {
		t.Errorf("pxelinux.0: %q %v", b, err)
	}
	for _, bs := range []int{512, 1468, 65464} {
		if b, err := get(t, f.addr, "/images/img/3/vmlinuz", bs); err != nil || !bytes.Equal(b, f.kernel) {
			t.Errorf("kernel at blksize %d: %d bytes, %v", bs, len(b), err)
		}
	}
	cfg, err := get(t, f.addr, "pxelinux.cfg/01-52-54-00-00-00-01", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SERIAL 0 115200", "KERNEL images/img/3/vmlinuz", "INITRD images/img/3/initrd.img",
		"bootd.nfs=10.0.0.1:2049:/img/3", "bootd.hostname=n1", "BOOTIF=01-52-54-00-00-00-01", "console=ttyS0,115200n8", "quiet"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	// The generation is pinned when the config is fetched.
	var sawConfig bool
	// The server records the transfer once the last ACK is in, a moment
	// after the client has its data.
	for i := 0; i < 100 && !sawConfig; i++ {
		for _, e := range f.events.Recent() {
			if e.Stage == events.StageConfig && e.MAC == "52:54:00:00:00:01" && strings.HasSuffix(e.Detail, "img/3") {
				sawConfig = true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !sawConfig {
		t.Errorf("no config event: %+v", f.events.Recent())
	}
	def, err := get(t, f.addr, "pxelinux.cfg/default", 0)
	if err != nil || !strings.Contains(string(def), "IPAPPEND 2") || strings.Contains(string(def), "bootd.hostname") {
		t.Errorf("default config: %v\n%s", err, def)
	}
}

func TestNotFoundAndTraversal(t *testing.T) {
	f := start(t)
	for _, name := range []string{
		"pxelinux.cfg/C0A80A0F", "pxelinux.cfg/01-zz", "images/img/4/vmlinuz", "images/img/3/../../../etc/passwd",
		"../../../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd", "images/img/03/vmlinuz", "images/Img/3/vmlinuz",
		"ldlinux.c32", "state", "images/img/3/root", filepath.Join(f.state, "images/img/3/boot/vmlinuz"),
	} {
		b, err := get(t, f.addr, name, 0)
		if err == nil {
			t.Errorf("%q: served %d bytes", name, len(b))
			continue
		}
		if strings.Contains(err.Error(), f.state) || strings.Contains(err.Error(), "/tmp") || strings.Contains(err.Error(), "missing.c32") {
			t.Errorf("%q: error leaks a server path: %v", name, err)
		}
	}
	// Write requests are refused.
	c, _ := tftp.NewClient(f.addr)
	c.SetTimeout(time.Second)
	rf, err := c.Send("pxelinux.0", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("overwrite"))
	}
	if err == nil {
		t.Error("a write request succeeded")
	}
	if b, _ := get(t, f.addr, "pxelinux.0", 0); !bytes.Equal(b, f.loader) {
		t.Error("the loader changed")
	}
}

// TestCurl fetches with curl's tftp://, an independent client.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if testing.Short() {
			t.Skip("curl not installed")
		}
		t.Fatal("curl not installed: the README's test command installs it")
	}
	f := start(t)
	for _, bs := range []string{"512", "1468"} {
		out, err := exec.Command(curl, "-s", "--tftp-blksize", bs, fmt.Sprintf("tftp://%s/images/img/3/vmlinuz", f.addr)).Output()
		if err != nil || !bytes.Equal(out, f.kernel) {
			t.Errorf("curl blksize %s: %d bytes, %v", bs, len(out), err)
		}
	}
	if out, err := exec.Command(curl, "-s", "-S", fmt.Sprintf("tftp://%s/../../etc/passwd", f.addr)).CombinedOutput(); err == nil {
		t.Errorf("curl fetched a traversal name: %s", out)
	}
}

package initrd

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/u-root/u-root/pkg/cpio"
)

// fakeImage is an image root with a kernel and a handful of fake modules.
func fakeImage(t *testing.T) string {
	root := t.TempDir()
	kver := "6.1.0-99-amd64"
	md := filepath.Join(root, "lib/modules", kver)
	mods := map[string]string{
		"kernel/fs/nfs/nfsv3.ko":                           "kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko",
		"kernel/fs/nfs/nfs.ko":                             "kernel/net/sunrpc/sunrpc.ko",
		"kernel/net/sunrpc/sunrpc.ko":                      "",
		"kernel/fs/overlayfs/overlay.ko":                   "",
		"kernel/drivers/net/ethernet/intel/e1000/e1000.ko": "",
		"kernel/drivers/net/virtio_net.ko":                 "",
		"kernel/drivers/virtio/virtio_pci.ko":              "",
		"kernel/sound/snd.ko":                              "", // not a NIC: must stay out
	}
	var dep bytes.Buffer
	for p, d := range mods {
		os.MkdirAll(filepath.Join(md, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(md, p), []byte("\x7fELF fake module "+p), 0o644)
		dep.WriteString(p + ": " + d + "\n")
	}
	os.WriteFile(filepath.Join(md, "modules.dep"), dep.Bytes(), 0o644)
	os.WriteFile(filepath.Join(md, "modules.alias"), []byte("alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias pci:v*d*sv*sd*bc04sc01i* snd\n"), 0o644)
	os.WriteFile(filepath.Join(md, "modules.builtin"), []byte("kernel/net/packet/af_packet.ko\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot/vmlinuz-"+kver), []byte("kernel"), 0o644)
	return root
}

// staticInit returns a static binary to play the init: the test binary
// itself is not static, so build a tiny one.
func staticInit(t *testing.T) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644)
	out := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a static init: %v %s", err, b)
	}
	return out
}

func TestBuildContentsAndReproducible(t *testing.T) {
	root := fakeImage(t)
	init := staticInit(t)
	var a, b bytes.Buffer
	res, err := Build(&a, Options{Root: root, Init: init, Compression: "gzip"})
	if err != nil {
		t.Fatal(err)
	}
	if res.KernelVersion != "6.1.0-99-amd64" || len(res.Modules) != 7 {
		t.Errorf("result %+v", res)
	}
	if _, err := Build(&b, Options{Root: root, Init: init, Compression: "gzip"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two builds from the same inputs differ")
	}
	// List it with GNU cpio, as an admin would.
	cmd := exec.Command("sh", "-c", "gzip -dc | cpio -itv --quiet")
	cmd.Stdin = bytes.NewReader(a.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		if testing.Short() {
			t.Skip("cpio not installed")
		}
		t.Fatalf("cpio -itv: %v %s", err, out)
	}
	list := string(out)
	for _, want := range []string{
		"crw-------   1 root     root       5,   1 Jan  1  1970 dev/console",
		"-rwxr-xr-x   1 root     root", " init\n",
		"lib/modules/6.1.0-99-amd64/kernel/fs/nfs/nfsv3.ko",
		"lib/modules/6.1.0-99-amd64/kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
		"lib/modules/6.1.0-99-amd64/modules.dep", "lib/modules/6.1.0-99-amd64/modules.alias",
		"etc/bootd-initrd.json", "drwxr-xr-x   2 root     root            0 Jan  1  1970 newroot",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "snd.ko") {
		t.Error("a sound driver went into the initrd")
	}
	// The manifest and the index inside.
	cmd = exec.Command("sh", "-c", "gzip -dc | cpio -i --quiet --to-stdout etc/bootd-initrd.json lib/modules/6.1.0-99-amd64/modules.alias")
	cmd.Stdin = bytes.NewReader(a.Bytes())
	inner, _ := cmd.Output()
	dec := json.NewDecoder(bytes.NewReader(inner))
	var man Manifest
	if err := dec.Decode(&man); err != nil || man.Kernel != "6.1.0-99-amd64" || strings.Join(man.Load, ",") != "af_packet,nfsv3,overlay" {
		t.Errorf("manifest %+v %v", man, err)
	}
	if !strings.Contains(string(inner), "e1000") || strings.Contains(string(inner), "snd") {
		t.Errorf("index in the initrd:\n%s", inner)
	}
}

func TestBuildErrors(t *testing.T) {
	root := fakeImage(t)
	init := staticInit(t)
	if _, err := Build(new(bytes.Buffer), Options{Root: root, Init: "/bin/sh"}); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic init: %v", err)
	}
	if _, err := Build(new(bytes.Buffer), Options{Root: root, Init: init, ExtraModules: []string{"zfs"}}); err == nil || !strings.Contains(err.Error(), "zfs") {
		t.Errorf("missing module: %v", err)
	}
	if _, err := Build(new(bytes.Buffer), Options{Root: t.TempDir(), Init: init}); err == nil || !strings.Contains(err.Error(), "linux-image-amd64") {
		t.Errorf("no kernel: %v", err)
	}
	os.Remove(filepath.Join(root, "lib/modules/6.1.0-99-amd64/modules.dep"))
	if _, err := Build(new(bytes.Buffer), Options{Root: root, Init: init}); err == nil || !strings.Contains(err.Error(), "depmod") {
		t.Errorf("no modules.dep: %v", err)
	}
}

// TestBuildCarriesNetconsole: a kernel with netconsole gets it carried,
// with what modules.dep says it needs, and indexed for the init to load;
// one without (fakeImage's) builds all the same.
func TestBuildCarriesNetconsole(t *testing.T) {
	init := staticInit(t)
	root := fakeImage(t)
	res, err := Build(new(bytes.Buffer), Options{Root: root, Init: init, Compression: "gzip"})
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("a kernel without netconsole: %v, missing %v", err, res.Missing)
	}
	md := filepath.Join(root, "lib/modules/6.1.0-99-amd64")
	for p, content := range map[string]string{"kernel/drivers/net/netconsole.ko": "netconsole", "kernel/fs/configfs/configfs.ko": "configfs"} {
		os.MkdirAll(filepath.Join(md, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(md, p), []byte("\x7fELF fake module "+content), 0o644)
	}
	f, _ := os.OpenFile(filepath.Join(md, "modules.dep"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("kernel/drivers/net/netconsole.ko: kernel/fs/configfs/configfs.ko\nkernel/fs/configfs/configfs.ko:\n")
	f.Close()
	var out bytes.Buffer
	res, err = Build(&out, Options{Root: root, Init: init, Compression: "gzip"})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	zr, err := gzip.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytesReaderAt(t, zr)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.ReaderAt != nil {
			b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			files[r.Name] = string(b)
		}
	}
	lib := "lib/modules/6.1.0-99-amd64/"
	for _, p := range []string{"kernel/drivers/net/netconsole.ko", "kernel/fs/configfs/configfs.ko"} {
		if !strings.Contains(files[lib+p], "fake module") || !slices.Contains(res.Modules, p) {
			t.Errorf("%s not carried (modules %v)", p, res.Modules)
		}
	}
	if !strings.Contains(files[lib+"modules.dep"], "kernel/drivers/net/netconsole.ko: kernel/fs/configfs/configfs.ko\n") {
		t.Errorf("the initrd's modules.dep:\n%s", files[lib+"modules.dep"])
	}
	var man Manifest
	if err := json.Unmarshal([]byte(files[ManifestPath]), &man); err != nil || slices.Contains(man.Load, "netconsole") {
		t.Errorf("netconsole is loaded on every boot, not when asked for: %+v %v", man, err)
	}
}

func bytesReaderAt(t *testing.T, r io.Reader) io.ReaderAt {
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

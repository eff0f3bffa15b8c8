package initrd

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// elfModule is a minimal ELF64 relocatable object whose .modinfo holds
// the given key=value entries: what moduleFirmware reads.
func elfModule(modinfo ...string) []byte {
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(info)
	shOff := (strOff + len(shstr) + 7) &^ 7
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	b.Write(make([]byte, 8))
	binary.Write(&b, le, uint16(1))  // ET_REL
	binary.Write(&b, le, uint16(62)) // x86-64
	binary.Write(&b, le, uint32(1))
	binary.Write(&b, le, uint64(0)) // entry
	binary.Write(&b, le, uint64(0)) // phoff
	binary.Write(&b, le, uint64(shOff))
	binary.Write(&b, le, uint32(0))
	binary.Write(&b, le, uint16(ehsize))
	binary.Write(&b, le, uint16(0)) // phentsize
	binary.Write(&b, le, uint16(0)) // phnum
	binary.Write(&b, le, uint16(shentsize))
	binary.Write(&b, le, uint16(3)) // shnum
	binary.Write(&b, le, uint16(2)) // shstrndx
	b.Write(info)
	b.Write(shstr)
	b.Write(make([]byte, shOff-b.Len()))
	section := func(name, typ uint32, off, size int) {
		binary.Write(&b, le, name)
		binary.Write(&b, le, typ)
		binary.Write(&b, le, uint64(0)) // flags
		binary.Write(&b, le, uint64(0)) // addr
		binary.Write(&b, le, uint64(off))
		binary.Write(&b, le, uint64(size))
		binary.Write(&b, le, uint32(0)) // link
		binary.Write(&b, le, uint32(0)) // info
		binary.Write(&b, le, uint64(1)) // align
		binary.Write(&b, le, uint64(0)) // entsize
	}
	section(0, 0, 0, 0)
	section(1, 1, infoOff, len(info))  // .modinfo, PROGBITS
	section(10, 3, strOff, len(shstr)) // .shstrtab, STRTAB
	return b.Bytes()
}

// unpacked is the decompressed cpio of a gzip initrd.
func unpacked(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const e1000 = "lib/modules/6.1.0-99-amd64/kernel/drivers/net/ethernet/intel/e1000/e1000.ko"

// TestBuildStaysInsideTheImage: nothing the image names (a module's
// firmware, a module path in modules.dep, a symlink, absolute or climbing)
// brings a master's file into an initrd that TFTP serves to anyone.
func TestBuildStaysInsideTheImage(t *testing.T) {
	init := staticInit(t)
	master := t.TempDir()
	secret := filepath.Join(master, "shadow")
	os.WriteFile(secret, []byte("MASTER-SECRET-root:$6$master"), 0o600)
	os.WriteFile(filepath.Join(master, "overlay.ko"), []byte("MASTER-SECRET-module"), 0o600)
	up := strings.Repeat("../", 30)

	for _, c := range []struct {
		name  string
		setup func(root string)
		// refused: the build fails (else it succeeds without the file)
		refused bool
	}{
		{"firmware name climbing out", func(root string) {
			os.WriteFile(filepath.Join(root, e1000), elfModule("license=GPL", "firmware="+up+secret[1:]), 0o644)
		}, true},
		{"absolute firmware name", func(root string) {
			os.WriteFile(filepath.Join(root, e1000), elfModule("firmware="+secret), 0o644)
		}, true},
		{"firmware file an absolute symlink", func(root string) {
			os.WriteFile(filepath.Join(root, e1000), elfModule("firmware=e1000/e1000.bin"), 0o644)
			os.MkdirAll(filepath.Join(root, "lib/firmware/e1000"), 0o755)
			os.Symlink(secret, filepath.Join(root, "lib/firmware/e1000/e1000.bin"))
		}, false},
		{"firmware directory an absolute symlink", func(root string) {
			os.WriteFile(filepath.Join(root, e1000), elfModule("firmware=shadow"), 0o644)
			os.Symlink(master, filepath.Join(root, "lib/firmware"))
		}, false},
		{"firmware file a climbing symlink", func(root string) {
			os.WriteFile(filepath.Join(root, e1000), elfModule("firmware=e1000/e1000.bin"), 0o644)
			os.MkdirAll(filepath.Join(root, "usr/lib/firmware/e1000"), 0o755)
			os.Symlink(up+secret[1:], filepath.Join(root, "usr/lib/firmware/e1000/e1000.bin"))
		}, false},
		{"firmware file a FIFO", func(root string) {
			os.WriteFile(filepath.Join(root, e1000), elfModule("firmware=e1000/e1000.bin"), 0o644)
			os.MkdirAll(filepath.Join(root, "lib/firmware/e1000"), 0o755)
			unix.Mkfifo(filepath.Join(root, "lib/firmware/e1000/e1000.bin"), 0o644)
		}, false},
		{"module an absolute symlink", func(root string) {
			p := filepath.Join(root, "lib/modules/6.1.0-99-amd64/kernel/fs/overlayfs/overlay.ko")
			os.Remove(p)
			os.Symlink(secret, p)
		}, true},
		{"module path climbing out in modules.dep", func(root string) {
			dep := filepath.Join(root, "lib/modules/6.1.0-99-amd64/modules.dep")
			b, _ := os.ReadFile(dep)
			b = bytes.Replace(b, []byte("kernel/fs/overlayfs/overlay.ko:"), []byte(up+master[1:]+"/overlay.ko:"), 1)
			os.WriteFile(dep, b, 0o644)
		}, true},
		{"module path absolute in modules.dep", func(root string) {
			dep := filepath.Join(root, "lib/modules/6.1.0-99-amd64/modules.dep")
			b, _ := os.ReadFile(dep)
			b = bytes.Replace(b, []byte("kernel/fs/overlayfs/overlay.ko:"), []byte(master+"/overlay.ko:"), 1)
			os.WriteFile(dep, b, 0o644)
		}, true},
		{"module index an absolute symlink", func(root string) {
			md := filepath.Join(root, "lib/modules/6.1.0-99-amd64")
			// The master's index is good: reading it at all is the escape.
			os.Rename(filepath.Join(md, "modules.dep"), filepath.Join(master, "modules.dep"))
			os.Symlink(filepath.Join(master, "modules.dep"), filepath.Join(md, "modules.dep"))
		}, true},
		{"kernel an absolute symlink", func(root string) {
			p := filepath.Join(root, "boot/vmlinuz-6.1.0-99-amd64")
			os.Remove(p)
			os.Symlink(secret, p)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := fakeImage(t)
			c.setup(root)
			var out bytes.Buffer
			var res Result
			var err error
			done := make(chan bool)
			go func() {
				res, err = Build(&out, Options{Root: root, Init: init, Compression: "gzip"})
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the build hung")
			}
			t.Logf("build: %v", err)
			if c.refused && err == nil {
				t.Errorf("built an initrd from an image naming a file outside it")
			}
			if !c.refused && err != nil {
				t.Errorf("refused an image whose links merely lead nowhere inside it: %v", err)
			}
			if out.Len() > 0 && bytes.Contains(unpacked(t, out.Bytes()), []byte("MASTER-SECRET")) {
				t.Errorf("the initrd carries the master's file")
			}
			if res.Kernel != "" {
				if b, _ := os.ReadFile(res.Kernel); bytes.Contains(b, []byte("MASTER-SECRET")) {
					t.Errorf("the kernel to serve is the master's file %s", res.Kernel)
				}
			}
		})
	}
}

// TestBuildResolvesLinksInsideTheImage: absolute symlinks in the image
// mean what they mean on the node: firmware linked by absolute path to
// another place in the image is carried.
func TestBuildResolvesLinksInsideTheImage(t *testing.T) {
	init := staticInit(t)
	root := fakeImage(t)
	os.WriteFile(filepath.Join(root, e1000), elfModule("firmware=e1000/e1000.bin", "firmware=e1000/absent.bin"), 0o644)
	os.MkdirAll(filepath.Join(root, "usr/share/fw"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/share/fw/real.bin"), []byte("IMAGE-FIRMWARE"), 0o644)
	os.MkdirAll(filepath.Join(root, "lib/firmware/e1000"), 0o755)
	os.Symlink("/usr/share/fw/real.bin", filepath.Join(root, "lib/firmware/e1000/e1000.bin"))
	var out bytes.Buffer
	if _, err := Build(&out, Options{Root: root, Init: init, Compression: "gzip"}); err != nil {
		t.Fatal(err)
	}
	cpio := unpacked(t, out.Bytes())
	if !bytes.Contains(cpio, []byte("lib/firmware/e1000/e1000.bin")) || !bytes.Contains(cpio, []byte("IMAGE-FIRMWARE")) {
		t.Error("the firmware (an absolute link inside the image) is not in the initrd")
	}
}

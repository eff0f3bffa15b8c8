package initrd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteBootFiles(t *testing.T) {
	root, init := fakeImage(t), staticInit(t)
	opt := Options{Root: root, Init: init, Compression: "gzip"}
	boot := filepath.Join(t.TempDir(), "images", "demo", "1", "boot")
	res, err := WriteBootFiles(boot, opt, false)
	if err != nil {
		t.Fatal(err)
	}
	kernel, _ := os.ReadFile(filepath.Join(boot, KernelFile))
	img, _ := os.ReadFile(filepath.Join(boot, InitrdFile))
	var want bytes.Buffer
	if _, err := Build(&want, opt); err != nil {
		t.Fatal(err)
	}
	if string(kernel) != "kernel" || !bytes.Equal(img, want.Bytes()) || res.KernelVersion != "6.1.0-99-amd64" || res.Size != int64(len(img)) {
		t.Errorf("boot files: kernel %q, initrd %d bytes (Build gives %d), result %+v", kernel, len(img), want.Len(), res)
	}
	// The same files again: nothing to replace, no error.
	if _, err := WriteBootFiles(boot, opt, false); err != nil {
		t.Errorf("writing the same boot files again: %v", err)
	}
	// A different initrd there is left alone unless replace says so:
	// nodes may be loading it.
	os.WriteFile(filepath.Join(boot, InitrdFile), []byte("older"), 0o644)
	if _, err := WriteBootFiles(boot, opt, false); !errors.Is(err, ErrDiffers) {
		t.Errorf("a differing initrd without replace: err %v, want ErrDiffers", err)
	}
	if b, _ := os.ReadFile(filepath.Join(boot, InitrdFile)); string(b) != "older" {
		t.Errorf("initrd replaced without replace")
	}
	if _, err := WriteBootFiles(boot, opt, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(boot, InitrdFile)); !bytes.Equal(b, want.Bytes()) {
		t.Errorf("initrd not replaced with replace")
	}
	// Nothing but the two files: no temporary left behind.
	if ents, _ := os.ReadDir(boot); len(ents) != 2 {
		t.Errorf("boot dir holds %d entries, want 2", len(ents))
	}

	out := filepath.Join(t.TempDir(), "initrd.img")
	if _, err := WriteFile(out, opt); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !bytes.Equal(b, want.Bytes()) {
		t.Errorf("WriteFile wrote %d bytes, want %d", len(b), want.Len())
	}
}

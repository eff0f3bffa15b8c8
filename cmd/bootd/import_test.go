package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A Debian image as a container build makes it (minbase, no kernel, no
// systemd) becomes a bootable generation: what a node needs is installed
// with apt, the image is prepared, the initrd generated.
func TestImportDebianImage(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and the Debian mirror (mmdebstrap, apt): not in -short")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Fatal("mmdebstrap is not installed (scripts/deps.sh installs it)")
	}
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer.tar")
	if out, err := exec.Command("mmdebstrap", "--variant=minbase", "--format=tar", "bookworm", layer).CombinedOutput(); err != nil {
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	// A docker save archive of it, as `docker save debian:bookworm-slim`
	// writes one.
	b, err := os.ReadFile(layer)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%x"]}}`, sha256.Sum256(b))), 0o644)
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`[{"Config":"config.json","RepoTags":["debian:bookworm"],"Layers":["layer.tar"]}]`), 0o644)
	archive := filepath.Join(dir, "debian.tar")
	if out, err := exec.Command("tar", "-C", dir, "-cf", archive, "manifest.json", "config.json", "layer.tar").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	os.Remove(layer)

	state := t.TempDir()
	cfg := filepath.Join(dir, "bootd.yaml")
	os.WriteFile(cfg, []byte("state_dir: "+state+"\nnfs: {allow: [10.0.0.0/24]}\n"), 0o644)
	out, err := exec.Command(bootdBin, "image", "import", archive, "--name", "imported", "--config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("bootd image import: %v\n%s", err, out)
	}
	gen := filepath.Join(state, "images", "imported", "1")
	for _, f := range []string{"boot/vmlinuz", "boot/initrd.img", "root/usr/sbin/init", "root/sbin/mount.nfs", "root/usr/sbin/sshd"} {
		if _, err := os.Stat(filepath.Join(gen, f)); err != nil {
			t.Errorf("the imported generation lacks %s", f)
		}
	}
	var meta struct {
		Suite, Kernel string
		Prepared      []string
	}
	mb, _ := os.ReadFile(filepath.Join(gen, "image.json"))
	if err := json.Unmarshal(mb, &meta); err != nil || meta.Suite != "bookworm" || !strings.HasPrefix(meta.Kernel, "6.1.") || len(meta.Prepared) == 0 {
		t.Errorf("image.json: %s (%v)", mb, err)
	}
	if cur, _ := os.Readlink(filepath.Join(state, "images", "imported", "current")); cur != "1" {
		t.Errorf("current -> %q, want 1", cur)
	}
	// No SSH host keys travel in an image (each node makes its own).
	if keys, _ := filepath.Glob(filepath.Join(gen, "root/etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("host keys in the imported image: %v", keys)
	}
}

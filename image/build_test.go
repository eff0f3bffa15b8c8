package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootd/bootd/initrd"
	"github.com/bootd/bootd/lab"
	"github.com/bootd/bootd/store"
)

func needBuildTools(t *testing.T) {
	if testing.Short() {
		t.Skip("bootstraps Debian from the package registry: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	if tool() == "" {
		t.Fatal("mmdebstrap not installed: the README's test command installs it")
	}
}

// cacheDir keeps packages between runs where the machine keeps /var/cache.
const cacheDir = "/var/cache/bootd-lab/debs"

// TestBuildTrixie builds a Debian 13 image for real (the end-to-end test
// builds and boots Debian 12), generates its initrd from .ko.xz modules,
// and checks the prepared tree.
func TestBuildTrixie(t *testing.T) {
	needBuildTools(t)
	state, err := os.MkdirTemp("/var/tmp", "bootd-image-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer exec.Command("rm", "-rf", state).Run()
	st := store.New(state)
	bin := filepath.Join(t.TempDir(), "bootd")
	if err := lab.BuildBootd("..", bin); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	start := time.Now()
	gen, err := Build(context.Background(), st, BuildOptions{
		Name: "trixie", Suite: "trixie", CacheDir: cacheDir, Progress: &progress, Publish: true,
		Initrd: func(root, boot string) (string, error) {
			var buf bytes.Buffer
			res, err := initrd.Build(&buf, initrd.Options{Root: root, Init: bin})
			if err != nil {
				return "", err
			}
			os.MkdirAll(boot, 0o755)
			k, _ := os.ReadFile(res.Kernel)
			os.WriteFile(filepath.Join(boot, "vmlinuz"), k, 0o644)
			t.Logf("trixie initrd: %d bytes, %d modules, kernel %s", res.Size, len(res.Modules), res.KernelVersion)
			return res.KernelVersion, os.WriteFile(filepath.Join(boot, "initrd.img"), buf.Bytes(), 0o644)
		},
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(progress.String(), 3000))
	}
	t.Logf("Debian 13 image built in %v", time.Since(start).Round(time.Second))
	if !strings.Contains(progress.String(), "Setting up") || !strings.Contains(progress.String(), "preparing for diskless life") {
		t.Errorf("no progress shown:\n%s", tail(progress.String(), 1000))
	}
	if cur, _ := st.Current("trixie"); cur != gen {
		t.Errorf("current is %d, built %d", cur, gen)
	}
	root := st.RootDir("trixie", gen)
	for _, p := range []string{"boot/../" + "etc/os-release"} {
		b, _ := os.ReadFile(filepath.Join(root, p))
		if !strings.Contains(string(b), "trixie") {
			t.Errorf("os-release: %s", b)
		}
	}
	checks := map[string]func() bool{
		"no /etc/hostname": func() bool { _, err := os.Lstat(filepath.Join(root, "etc/hostname")); return err != nil },
		"empty machine-id": func() bool {
			b, err := os.ReadFile(filepath.Join(root, "etc/machine-id"))
			return err == nil && len(b) == 0
		},
		"serial getty": func() bool {
			_, err := os.Lstat(filepath.Join(root, "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"))
			return err == nil
		},
		"apt timers masked": func() bool {
			l, _ := os.Readlink(filepath.Join(root, "etc/systemd/system/apt-daily.timer"))
			return l == "/dev/null"
		},
		"no ssh host keys (nodes make theirs at boot)": func() bool {
			m, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
			return len(m) == 0
		},
		"ssh host key unit enabled": func() bool {
			// The link is absolute: it means something inside the image only.
			l, _ := os.Readlink(filepath.Join(root, "etc/systemd/system/ssh.service.wants", hostKeyUnit))
			_, err := os.Stat(filepath.Join(root, l))
			return l == "/etc/systemd/system/"+hostKeyUnit && err == nil
		},
		"journal in RAM": func() bool {
			_, err := os.Stat(filepath.Join(root, "etc/systemd/journald.conf.d/bootd.conf"))
			return err == nil
		},
		"logs to the master": func() bool {
			_, err := os.Stat(filepath.Join(root, "etc/rsyslog.d/60-bootd-forward.conf"))
			return err == nil
		},
		"kernel and initrd": func() bool {
			_, err := os.Stat(filepath.Join(st.BootDir("trixie", gen), "initrd.img"))
			return err == nil
		},
		"image.json": func() bool {
			_, err := os.Stat(filepath.Join(st.GenDir("trixie", gen), "image.json"))
			return err == nil
		},
		"no initramfs-tools initrd": func() bool { m, _ := filepath.Glob(filepath.Join(root, "boot/initrd.img-*")); return len(m) == 0 },
	}
	for what, ok := range checks {
		if !ok() {
			t.Errorf("prepared tree: %s: no", what)
		}
	}
	infos, _ := List(st)
	if len(infos) != 1 || infos[0].Meta.Suite != "trixie" || infos[0].Meta.Bytes == 0 || !infos[0].HasBoot {
		t.Errorf("list: %+v", infos)
	}
}

// TestInterruptedBuildLeavesNothing stops a build in the middle of the
// bootstrap: no generation, no half tree, current unchanged.
func TestInterruptedBuildLeavesNothing(t *testing.T) {
	needBuildTools(t)
	state := t.TempDir()
	st := store.New(state)
	if err := bootable(context.Background(), st.GenDir("img", 1)); err != nil {
		t.Fatal(err)
	}
	if err := st.Publish("img", 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	progress := &syncWriter{}
	go func() {
		// Stop once packages are being installed.
		for i := 0; i < 600 && !progress.contains("Unpacking"); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
	}()
	_, err := Build(ctx, st, BuildOptions{Name: "img", Suite: "bookworm", CacheDir: cacheDir, Progress: progress, Publish: true})
	if err == nil {
		t.Fatal("an interrupted build succeeded")
	}
	if gens, _ := st.Generations("img"); len(gens) != 1 || gens[0] != 1 {
		t.Errorf("generations after the interrupted build: %v", gens)
	}
	if cur, _ := st.Current("img"); cur != 1 {
		t.Errorf("current moved to %d", cur)
	}
	ents, _ := os.ReadDir(filepath.Join(st.ImagesDir(), "img"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".build") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Contains(w.b.String(), s)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

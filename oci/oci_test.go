package oci

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/nfs"
)

// startRegistry runs Debian's docker-registry (distribution) on
// 127.0.0.1 for the test and returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		if testing.Short() {
			t.Skip("docker-registry is not installed (apt-get install docker-registry)")
		}
		t.Fatal("docker-registry is not installed (scripts/deps.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http: {addr: "%s"}
`, filepath.Join(dir, "data"), addr)), 0o644)
	cmd := exec.Command(bin, "serve", cfg)
	logf, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("docker-registry's log:\n%s", b)
		}
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if r, err := http.Get("http://" + addr + "/v2/"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("docker-registry did not come up")
	return ""
}

// makeGeneration writes a generation directory with every kind of object
// and attribute a Debian root has, and dpkg file lists for two packages on
// a merged-/usr layout.
func makeGeneration(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root")
	for _, d := range []string{"usr/bin", "usr/share/doc/foo", "usr/lib", "etc/ssh", "tmp", "dev", "run", "var/lib/dpkg/info", "var/empty", "srv/deep/er"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.Symlink("usr/bin", filepath.Join(root, "bin")))
	must(os.Symlink("usr/lib", filepath.Join(root, "lib")))
	write := func(p, s string, mode uint32) {
		must(os.WriteFile(filepath.Join(root, p), []byte(s), 0o644))
		must(syscall.Chmod(filepath.Join(root, p), mode))
	}
	write("usr/bin/foo", "foo binary\n", 0o755)
	write("usr/bin/sudo", "setuid\n", 0o4755)
	write("usr/bin/wall", "setgid\n", 0o2755)
	write("usr/lib/libbar.so", strings.Repeat("bar library ", 5000), 0o644)
	write("usr/share/doc/foo/copyright", "GPL\n", 0o644)
	write("etc/ssh/sshd_config", "PermitRootLogin no\n", 0o644)
	write("etc/hostname", "node\n", 0o644)
	write("var/lib/dpkg/status", "Package: foo\n\nPackage: bar\n", 0o644)
	write("var/lib/dpkg/info/foo.list", "/.\n/bin\n/bin/foo\n/usr/share/doc/foo\n/usr/share/doc/foo/copyright\n", 0o644)
	write("var/lib/dpkg/info/bar:amd64.list", "/.\n/lib/libbar.so\n/usr/bin/sudo\n", 0o644)
	must(syscall.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must(os.Link(filepath.Join(root, "usr/bin/sudo"), filepath.Join(root, "srv/deep/er/sudo-link")))
	must(os.Link(filepath.Join(root, "usr/bin/sudo"), filepath.Join(root, "usr/bin/sudoedit")))
	must(os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(root, "etc/localtime")))
	must(os.Symlink("../nowhere", filepath.Join(root, "etc/dangling")))
	must(syscall.Mkfifo(filepath.Join(root, "run/initctl"), 0o600))
	must(unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(root, "dev/sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))))
	must(syscall.Chmod(filepath.Join(root, "dev/null"), 0o666))
	must(os.Lchown(filepath.Join(root, "etc/ssh/sshd_config"), 1234, 5678))
	must(os.Lchown(filepath.Join(root, "etc/localtime"), 42, 43))
	must(unix.Lsetxattr(filepath.Join(root, "usr/bin/foo"), "user.bootd.test", []byte("cap\x00bytes"), 0))
	must(unix.Lsetxattr(filepath.Join(root, "usr/bin/foo"), "trusted.bootd", []byte("x"), 0))
	// A name from another generation (image update shares inodes).
	must(os.Link(filepath.Join(root, "etc/hostname"), filepath.Join(dir, "outside-link")))
	must(os.MkdirAll(filepath.Join(dir, "boot"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "boot/vmlinuz"), []byte("kernel"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "boot/initrd.img"), []byte("initrd"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "image.json"), []byte(`{"name":"demo","generation":3}`), 0o644))
	// Times with nanoseconds, directories last (writing into one moves
	// its mtime).
	i := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		i++
		ts := []unix.Timespec{unix.NsecToTimespec(1700000000_000000000 + int64(i)*1_000_000_007), unix.NsecToTimespec(1600000000_123456789 + int64(i)*1_000_000_007)}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func TestPushPullKeepsHandles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: device nodes, owners, trusted.* attributes")
	}
	reg := startRegistry(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "3")
	makeGeneration(t, src)
	fp, err := nfs.Fingerprint("demo", 3, filepath.Join(src, "root"))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg + "/bootd/demo:3"
	cached := Options{TempDir: t.TempDir()} // pushes reuse the layers they packed
	rep, err := Push(ctx, Generation{Name: "demo", Gen: 3, Dir: src, Fingerprint: fp}, []string{ref, reg + "/bootd/demo:latest"}, cached)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first push: %+v", rep)
	if rep.NewBlobs != rep.Layers+1 || rep.Uploaded < rep.Bytes {
		t.Errorf("first push uploaded %d blobs, %d bytes; want all %d layers and the config, %d bytes", rep.NewBlobs, rep.Uploaded, rep.Layers, rep.Bytes)
	}

	r, err := Fetch(ctx, reg+"/bootd/demo", Options{}) // latest
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "demo" || r.Gen != 3 || r.Fingerprint != fp || r.Digest != rep.Digest {
		t.Fatalf("fetched %s %d %s %s, pushed demo 3 %s %s", r.Name, r.Gen, r.Fingerprint, r.Digest, fp, rep.Digest)
	}
	dst := filepath.Join(t.TempDir(), "3")
	os.Mkdir(dst, 0o755)
	if err := r.Unpack(ctx, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := nfs.Fingerprint("demo", 3, filepath.Join(dst, "root"))
	if err != nil {
		t.Fatal(err)
	}
	if got != fp {
		out, _ := exec.Command("sh", "-c", fmt.Sprintf("cd %s && find . -printf '%%p %%m %%U:%%G %%n %%T@ %%l\\n' | sort > /tmp/a; cd %s && find . -printf '%%p %%m %%U:%%G %%n %%T@ %%l\\n' | sort > /tmp/b; diff /tmp/a /tmp/b", src, dst)).CombinedOutput()
		t.Fatalf("pulled tree's fingerprint %s, pushed %s:\n%s", got, fp, out)
	}
	for _, p := range []string{"boot/vmlinuz", "boot/initrd.img", "image.json", "root/usr/lib/libbar.so"} {
		a, _ := os.ReadFile(filepath.Join(src, p))
		b, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || string(a) != string(b) {
			t.Errorf("%s differs after the pull (%v)", p, err)
		}
	}
	if v, err := xattr(filepath.Join(dst, "root/usr/bin/foo"), "user.bootd.test"); err != nil || v != "cap\x00bytes" {
		t.Errorf("user.bootd.test = %q, %v", v, err)
	}
	if v, err := xattr(filepath.Join(dst, "root/usr/bin/foo"), "trusted.bootd"); err != nil || v != "x" {
		t.Errorf("trusted.bootd = %q, %v", v, err)
	}

	// Pushing the same generation again sends no layer.
	rep2, err := Push(ctx, Generation{Name: "demo", Gen: 3, Dir: src, Fingerprint: fp}, []string{ref}, cached)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.NewBlobs != 0 || rep2.Digest != rep.Digest {
		t.Errorf("second push of the same tree: %d blobs uploaded, digest %s (first %s)", rep2.NewBlobs, rep2.Digest, rep.Digest)
	}

	// An update of one package: only its layer, dpkg's and the boot
	// files' travel.
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "root/usr/lib/libbar.so"), []byte("bar 2"), 0o644))
	must(os.WriteFile(filepath.Join(src, "root/var/lib/dpkg/status"), []byte("Package: foo\n\nPackage: bar\nVersion: 2\n"), 0o644))
	rep3, err := Push(ctx, Generation{Name: "demo", Gen: 4, Dir: src, Fingerprint: fp}, []string{reg + "/bootd/demo:4"}, cached)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("update push: %+v", rep3)
	if rep3.NewBlobs != 3 { // pkg/bar, dir/var/lib, config
		t.Errorf("an update of one package uploaded %d blobs, want 3 (its layer, dpkg's, the config)", rep3.NewBlobs)
	}
}

func xattr(p, name string) (string, error) {
	b := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, b)
	if err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

func TestLayerPlan(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: device nodes")
	}
	dir := filepath.Join(t.TempDir(), "3")
	makeGeneration(t, dir)
	plans, err := planLayers(dir)
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]string{}
	for _, p := range plans {
		for _, e := range p.entries {
			if e.st.Mode&unix.S_IFMT == unix.S_IFDIR && p.key != "dirs" {
				t.Errorf("directory %s with its attributes in layer %s, want only in dirs", e.rel, p.key)
			}
			if !e.implied && e.st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if k, dup := where[e.rel]; dup {
					t.Errorf("%s in layers %s and %s", e.rel, k, p.key)
				}
				where[e.rel] = p.key
			}
		}
	}
	for _, p := range plans {
		for _, e := range p.entries {
			where[e.rel] += ""
		}
	}
	if _, ok := where["root/var/empty"]; !ok {
		t.Error("the empty directory var/empty is in no layer")
	}
	for rel, want := range map[string]string{
		"root/usr/bin/foo":                 "pkg/foo", // listed as /bin/foo: bin is a symlink to usr/bin
		"root/usr/share/doc/foo/copyright": "pkg/foo",
		"root/usr/lib/libbar.so":           "pkg/bar",
		"root/usr/bin/sudo":                "pkg/bar",
		"root/usr/bin/sudoedit":            "pkg/bar", // a hard link goes with its inode's first name
		"root/srv/deep/er/sudo-link":       "pkg/bar",
		"root/usr/bin/wall":                "dir/usr/bin",
		"root/etc/ssh/sshd_config":         "dir/etc/ssh",
		"root/var/lib/dpkg/status":         "dir/var/lib",
		"boot/vmlinuz":                     "boot",
	} {
		if where[rel] != want {
			t.Errorf("%s in layer %q, want %q", rel, where[rel], want)
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/store"
)

const testRecording = "testdata/boot-nfs.jsonl.gz"

// The shipped recording is one real node's boot, whole and in order.
func TestRecording(t *testing.T) {
	rec, err := loadRecording(testRecording)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, o := range rec.ops {
		count[o.Proc]++
	}
	t.Logf("%d calls over %v: %v", len(rec.ops), rec.at[len(rec.at)-1].Round(time.Millisecond), count)
	if len(rec.ops) < 1000 || count["READ"] < 100 || count["LOOKUP"] < 100 || count["ACCESS"] < 100 {
		t.Errorf("not a boot's worth of calls: %v", count)
	}
	for i := 1; i < len(rec.at); i++ {
		if rec.at[i] < rec.at[i-1] {
			t.Fatalf("call %d is earlier than the one before", i)
		}
	}
}

func TestParsers(t *testing.T) {
	e, err := parsePXELinux([]byte("SERIAL 0 115200\nDEFAULT b\nLABEL a\n KERNEL x\nLABEL b\n  KERNEL images/b/1/vmlinuz\n  APPEND initrd=images/b/1/initrd.img bootd.nfs=10.0.0.1:2049:/b/1 quiet\n"))
	if err != nil || e.kernel != "images/b/1/vmlinuz" || e.initrd != "images/b/1/initrd.img" {
		t.Errorf("pxelinux: %+v, %v", e, err)
	}
	s := "#!ipxe\n:retry\nimgfree\nkernel http://10.0.0.1:8080/boot/k?mac=52-54-00-00-00-01 initrd=initrd.img bootd.nfs=10.0.0.1:2049:/b/1 bootd.ip=${ip}:${netmask}:: || goto failed\ninitrd --name initrd.img http://10.0.0.1:8080/boot/i?mac=52-54-00-00-00-01 || goto failed\nboot || goto failed\n"
	e, err = parseIPXE([]byte(s), map[string]string{"ip": "10.0.0.9", "netmask": "255.255.0.0"})
	if err != nil || e.kernel != "http://10.0.0.1:8080/boot/k?mac=52-54-00-00-00-01" || e.initrd != "http://10.0.0.1:8080/boot/i?mac=52-54-00-00-00-01" ||
		!strings.Contains(e.append, "bootd.ip=10.0.0.9:255.255.0.0::") {
		t.Errorf("ipxe: %+v, %v", e, err)
	}
	ip, port, exp, err := nfsRoot(e.append)
	if err != nil || ip.String() != "10.0.0.1" || port != 2049 || exp != "/b/1" {
		t.Errorf("bootd.nfs: %v %d %q %v", ip, port, exp, err)
	}
	ip, port, exp, err = nfsRoot("root=/dev/nfs nfsroot=10.214.0.1:/srv/img/root,vers=3,tcp ip=dhcp")
	if err != nil || ip.String() != "10.214.0.1" || port != 0 || exp != "/srv/img/root" {
		t.Errorf("nfsroot: %v %d %q %v", ip, port, exp, err)
	}
	if got := relative("efi64/syslinux.efi", "pxelinux.cfg/default"); got != "efi64/pxelinux.cfg/default" {
		t.Errorf("relative: %s", got)
	}
}

// makeTree makes, under root, the files a recording asks for: what it
// reads is as long as the reads go, what it reads the links of are links,
// everything with something under it a directory.
func makeTree(t *testing.T, root string, rec *recording) {
	dirs := map[string]bool{"": true}
	links := map[string]bool{}
	sizes := map[string]int64{}
	var files []string
	addParents := func(p string) {
		for d := path.Dir(p); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, o := range rec.ops {
		switch o.Proc {
		case "LOOKUP":
			dirs[o.Path] = true
			files = append(files, join(o.Path, o.Name))
		case "READDIR", "READDIRPLUS":
			dirs[o.Path] = true
		case "READLINK":
			links[o.Path] = true
		case "READ":
			sizes[o.Path] = max(sizes[o.Path], int64(o.Offset)+int64(o.Count))
		}
		if o.Path != "" {
			files = append(files, o.Path)
		}
	}
	for _, f := range files {
		addParents(f)
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		full := filepath.Join(root, f)
		if dirs[f] {
			continue
		}
		if _, err := os.Lstat(full); err == nil {
			continue
		}
		if links[f] {
			if err := os.Symlink("target", full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(full, sizes[f]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStormAgainstBootd plays a small storm against `bootd serve` in
// namespaces of its own: every node, on the HTTP path and on the TFTP
// path (UEFI, with the 4011 exchange), reaches the end of its NFS
// replay, and bootd answers every call.
func TestStormAgainstBootd(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root, network namespaces and a bootd build: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces); run without -short only as root")
	}
	rec, err := loadRecording(testRecording)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := func(name, pkg string) string {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, b)
		}
		return out
	}
	bootd := bin("bootd", "github.com/bootd/bootd/cmd/bootd")
	storm := bin("storm", ".")

	state := filepath.Join(dir, "state")
	st := store.New(state)
	makeTree(t, st.RootDir("storm", 1), rec)
	if err := os.MkdirAll(st.BootDir("storm", 1), 0o755); err != nil {
		t.Fatal(err)
	}
	// Boot files the size of the real ones: the transfers are the load.
	for name, size := range map[string]int64{"vmlinuz": 8 << 20, "initrd.img": 8 << 20} {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i * 7)
		}
		if err := os.WriteFile(filepath.Join(st.BootDir("storm", 1), name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Publish("storm", 1); err != nil {
		t.Fatal(err)
	}

	const n = 24
	if out, err := exec.Command(storm, "net", "up", "-n", fmt.Sprint(n)).CombinedOutput(); err != nil {
		t.Fatalf("storm net up: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(storm, "net", "down").Run() })

	cfg := filepath.Join(dir, "bootd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`state_dir: %s
interface: sv0
dhcp: {mode: proxy}
tftp: {listen: "0.0.0.0:69"}
nfs: {listen: "10.215.0.1:2049", allow: ["10.215.0.0/16"]}
http: {listen: "10.215.0.1:8080", boot: chain}
defaults: {image: storm}
unknown_nodes: boot
`, state)), 0o644)
	logf, _ := os.Create(filepath.Join(dir, "bootd.log"))
	srv := exec.Command("ip", "netns", "exec", nsServer, bootd, "serve", "--config", cfg)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "bootd.log"))
			t.Logf("bootd's log:\n%s", tail(string(b), 40))
		}
	})
	// Up when its HTTP server answers, from the nodes' side.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := exec.Command("ip", "netns", "exec", nsClient, "curl", "-sf", "-o", "/dev/null", "http://10.215.0.1:8080/api/v1/nodes").Run()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bootd did not come up: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // NFS indexes the generation

	for _, fw := range []string{"ipxe", "uefi"} {
		t.Run(fw, func(t *testing.T) {
			out := filepath.Join(dir, fw+".json")
			cmd := exec.Command("ip", "netns", "exec", nsClient, storm, "run", "-n", fmt.Sprint(n), "-firmware", fw,
				"-replay", testRecording, "-compress", "20", "-pids", fmt.Sprint(srv.Process.Pid), "-timeout", "5m", "-out", out)
			b, err := cmd.CombinedOutput()
			t.Logf("%s", b)
			if err != nil {
				t.Fatal(err)
			}
			var rep report
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &rep); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"ipxe": "http", "uefi": "tftp"}[fw]
			if rep.Lost != 0 || rep.Path != want {
				t.Fatalf("lost %d (%v), path %q (want %s)", rep.Lost, rep.Reasons, rep.Path, want)
			}
			for _, o := range rep.Nodes {
				for _, s := range []string{"dhcp", "config", "kernel", "initrd", "mount", "booted"} {
					if _, ok := o.At[s]; !ok {
						t.Errorf("node %d (%s): no %s stage: %v", o.Node, o.MAC, s, o.At)
					}
				}
				if o.NFS.Calls < len(rec.ops) || o.NFS.Errors != 0 {
					t.Errorf("node %d: %d NFS calls of %d, %d errors", o.Node, o.NFS.Calls, len(rec.ops), o.NFS.Errors)
				}
				if o.Bytes < 16<<20 {
					t.Errorf("node %d: %d bytes fetched, want the kernel and initrd", o.Node, o.Bytes)
				}
			}
			if rep.PeakRSS == 0 || rep.CPUSeconds <= 0 {
				t.Errorf("server CPU %.2f s, peak RSS %d: not measured", rep.CPUSeconds, rep.PeakRSS)
			}
		})
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

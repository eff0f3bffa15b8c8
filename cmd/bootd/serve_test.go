package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/bootd/bootd/web"
)

var bootdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bootd-bin-")
	if err != nil {
		panic(err)
	}
	bootdBin = filepath.Join(dir, "bootd")
	// Static, as a real install is: the initrd's init is this binary.
	build := exec.Command("go", "build", "-o", bootdBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building bootd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running `bootd serve`.
type daemon struct {
	cmd    *exec.Cmd
	addr   string
	http   string // the API's base URL
	config string
	mu     sync.Mutex
	log    bytes.Buffer
}

func (d *daemon) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.Write(p)
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// freePort returns a port nothing listens on, never one it returned
// before: a port closed and asked for again can come back, and two
// services of one bootd given the same port fail to start (seen in CI).
func freePort(t *testing.T) string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !portsGiven[addr] {
			portsGiven[addr] = true
			return addr
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[string]bool{}
)

// startBootd runs `bootd serve --config` with only NFS enabled and waits
// until it accepts connections.
func startBootd(t *testing.T, state, addr string) *daemon {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "bootd.yaml")
	httpAddr := freePort(t)
	os.WriteFile(cfg, []byte(fmt.Sprintf("state_dir: %s\ndhcp: {mode: \"off\"}\ntftp: {listen: \"\"}\nnfs:\n  listen: %q\n  allow: [127.0.0.1/32]\n  secure_ports: false\n"+
		"http: {listen: %q}\nconsole: {listen: \"\"}\n", state, addr, httpAddr)), 0o644)
	return startBootdWith(t, cfg, addr)
}

// startBootdWith runs `bootd serve --config cfg` and waits until it
// accepts connections on addr (its NFS port).
func startBootdWith(t *testing.T, cfg, addr string) *daemon {
	t.Helper()
	d := &daemon{addr: addr, config: cfg}
	if b, err := os.ReadFile(cfg); err == nil {
		if _, rest, ok := strings.Cut(string(b), "http: {listen: \""); ok {
			d.http = "http://" + rest[:strings.Index(rest, "\"")]
		}
	}
	d.cmd = exec.Command(bootdBin, "serve", "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d, d
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("bootd did not start listening on %s:\n%s", addr, d.logText())
	return nil
}

func (d *daemon) stop() {
	if d.cmd.ProcessState == nil {
		d.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
}

func makeImage(t *testing.T, state string, files int) {
	t.Helper()
	root := filepath.Join(state, "images", "demo", "1", "root")
	for i := 0; i < files; i++ {
		dir := filepath.Join(root, "usr", fmt.Sprintf("d%02d", i%50))
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("node\n"), 0o644)
	os.Symlink("1", filepath.Join(state, "images", "demo", "current"))
}

func mountTarget(t *testing.T, addr, path string) *nfsc.Target {
	t.Helper()
	c, err := rpc.DialTCP("tcp", addr, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	target, err := (&nfsc.Mount{Client: c}).Mount(path, rpc.NewAuthUnix("test", 0, 0).Auth())
	if err != nil {
		t.Fatalf("mounting %s from %s: %v", path, addr, err)
	}
	return target
}

func TestServeRestartAndTwoMasters(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 2000)
	paths := []string{"/etc/hostname", "/usr/d07/f01957", "/usr/d49"}

	addrA := freePort(t)
	a := startBootd(t, state, addrA)
	addrB := freePort(t)
	startBootd(t, state, addrB)

	ta := mountTarget(t, addrA, "/demo/1")
	tb := mountTarget(t, addrB, "/demo")
	var handles [][]byte
	for _, p := range paths {
		_, fha, err := ta.Lookup(p)
		if err != nil {
			t.Fatalf("lookup %s on A: %v", p, err)
		}
		_, fhb, err := tb.Lookup(p)
		if err != nil {
			t.Fatalf("lookup %s on B: %v", p, err)
		}
		if !bytes.Equal(fha, fhb) {
			t.Errorf("%s: handle %x from A, %x from B", p, fha, fhb)
		}
		if len(fha) > 64 || len(fha)%4 != 0 {
			t.Errorf("%s: handle of %d bytes", p, len(fha))
		}
		handles = append(handles, fha)
	}

	// Restart A; a client that kept its handles (as a booted node's kernel
	// does) goes on using them without mounting again.
	a.stop()
	startBootd(t, state, addrA)
	c, err := rpc.DialTCP("tcp", addrA, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, fh := range handles {
		target, err := nfsc.NewTargetWithClient(c, rpc.NewAuthUnix("test", 0, 0).Auth(), fh, "/", 0)
		if err != nil {
			t.Fatalf("%s after restart: %v", paths[i], err)
		}
		if attr, err := target.GetAttr(fh); err != nil {
			t.Errorf("GETATTR %s with a handle from before the restart: %v", paths[i], err)
		} else if i == 0 && attr.Filesize != 5 {
			t.Errorf("%s: size %d after restart", paths[i], attr.Filesize)
		}
	}
}

func TestServeRefusesOtherAddresses(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 10)
	addr := freePort(t)
	d := startBootd(t, state, addr)
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("127.0.0.2 was not refused")
	}
	for i := 0; i < 50 && !strings.Contains(d.logText(), "refused connection"); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if log := d.logText(); !strings.Contains(log, "refused connection") || !strings.Contains(log, "127.0.0.2") {
		t.Errorf("no log line for the refused client:\n%s", log)
	}
}

func TestServeBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bootd.yaml")
	os.WriteFile(cfg, []byte("state_dir: /tmp\nnfs:\n  allow: [127.0.0.1/32]\n  secure_port: true\n"), 0o644)
	out, err := exec.Command(bootdBin, "serve", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatal("bootd serve accepted a config with an unknown key")
	}
	if want := cfg + `:4: unknown key "secure_port" in nfs`; !strings.Contains(string(out), want) {
		t.Errorf("error output %q does not contain %q", out, want)
	}
	out, err = exec.Command(bootdBin, "serve", "--config", "/nonexistent/bootd.yaml").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/nonexistent/bootd.yaml") {
		t.Errorf("missing config: %v %s", err, out)
	}
}

// SIGHUP reloads the config and does not end serve, and serve keeps
// STATE/run/stats.json.
func TestServeSIGHUPAndStats(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 10)
	addr := freePort(t)
	d := startBootd(t, state, addr)
	waitHTTP(t, d.http+"/api/v1/status")
	if r := sighup(t, d); r.OK != 1 || r.Failed != 0 {
		t.Errorf("reload of an unchanged config: %+v", r)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("bootd stopped serving after SIGHUP: %v\n%s", err, d.logText())
	}
	c.Close()
	var st Stats
	for i := 0; i < 50; i++ {
		b, err := os.ReadFile(filepath.Join(state, "run", "stats.json"))
		if err == nil && json.Unmarshal(b, &st) == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.PID != d.cmd.Process.Pid || st.Goroutines == 0 || st.OpenFDs == 0 || st.RSSBytes == 0 || st.NFSConns == nil {
		t.Errorf("stats.json: %+v", st)
	}
}

// A service that cannot start ends serve with its error, whatever the
// number of services failing at once.
func TestServeExitsWhenServicesFail(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ubusy, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ubusy.Close()
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "bootd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("state_dir: %s\ninterface: lo\ndhcp: {mode: \"off\"}\ntftp: {listen: %q}\nnfs:\n  listen: %q\n  allow: [127.0.0.1/32]\nsyslog: {listen: %q, allow: [127.0.0.1/32]}\nhttp: {listen: %q}\nconsole: {listen: %q}\n",
		state, ubusy.LocalAddr().String(), busy.Addr().String(), busy.Addr().String(), busy.Addr().String(), ubusy.LocalAddr().String())), 0o644)
	cmd := exec.Command(bootdBin, "serve", "--config", cfg)
	done := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("serve exited 0 with its ports taken:\n%s", out.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("serve hung with its ports taken:\n%s", out.String())
	}
}

// TestServeAPI: a running bootd answers its API and metrics, takes a
// node's report, and still has the node's record after a restart; `bootd
// nodes list/show` print it.
func TestServeAPI(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 10)
	// A root-only file: root from an address that is no node's gets
	// nobody's rights (nfs.squash_unknown), a node's root reads it.
	os.WriteFile(filepath.Join(state, "images", "demo", "1", "root", "etc", "shadow"), []byte("root:x\n"), 0o600)
	d := startBootd(t, state, freePort(t))
	target := mountTarget(t, d.addr, "/demo/1")
	readShadow := func() error {
		f, err := target.Open("/etc/shadow")
		if err == nil {
			_, err = io.ReadAll(f)
			f.Close()
		}
		return err
	}
	if err := readShadow(); err == nil {
		t.Error("root from an address that is no node's read /etc/shadow")
	}
	waitHTTP(t, d.http+"/api/v1/nodes")
	report := `{"mac":"52:54:00:bd:00:07","stage":"root","image":"demo","generation":1,"hostname":"node07"}`
	resp, err := http.Post(d.http+"/api/v1/report", "application/json", strings.NewReader(report))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("report: %v %v", resp, err)
	}
	// 127.0.0.1 is node07's address now.
	if err := readShadow(); err != nil {
		t.Errorf("a node's root cannot read /etc/shadow: %v", err)
	}
	metrics := get(t, d.http+"/metrics")
	for _, want := range []string{`bootd_nodes{stage="root"} 1`, `bootd_reports_total{result="accepted"} 1`,
		`bootd_nfs_operations_total{procedure="MNT",program="mount",status="ok"} 1`, "go_build_info"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	d.stop()
	d2 := startBootdWith(t, d.config, d.addr)
	waitHTTP(t, d2.http+"/api/v1/nodes")
	out, err := exec.Command(bootdBin, "nodes", "show", "node07", "--config", d.config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "52:54:00:bd:00:07") || !strings.Contains(string(out), "root") {
		t.Errorf("nodes show after a restart: %v\n%s", err, out)
	}
	out, err = exec.Command(bootdBin, "nodes", "list", "--config", d.config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "node07") || !strings.Contains(string(out), "demo/1") {
		t.Errorf("nodes list: %v\n%s", err, out)
	}
	if out, err := exec.Command(bootdBin, "nodes", "show", "node99", "--config", d.config).CombinedOutput(); err == nil {
		t.Errorf("nodes show of an unknown node succeeded:\n%s", out)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	for range 100 {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered", url)
}

// TestServeConsoleFlood: a node that floods its console at 10 MB/s for
// 10 s costs bootd a bounded record and little memory, and another node's
// console and report still get through.
func TestServeConsoleFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s of flood: not in -short")
	}
	state := t.TempDir()
	makeImage(t, state, 10)
	nfsAddr, httpAddr := freePort(t), freePort(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	consoleAddr := pc.LocalAddr().String()
	pc.Close()
	cfg := filepath.Join(t.TempDir(), "bootd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("state_dir: %s\ndhcp: {mode: \"off\"}\ntftp: {listen: \"\"}\nnfs: {listen: %q, allow: [127.0.0.0/24], secure_ports: false}\n"+
		"http: {listen: %q}\nconsole: {listen: %q}\nstatus: {log_lines: 500, log_kib: 128}\n", state, nfsAddr, httpAddr, consoleAddr)), 0o644)
	d := startBootdWith(t, cfg, nfsAddr)
	waitHTTP(t, d.http+"/api/v1/nodes")
	reportFrom := func(src, mac string) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
		resp, err := c.Post(d.http+"/api/v1/report", "application/json", strings.NewReader(`{"mac":"`+mac+`","stage":"root"}`))
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("report from %s: %v %v", src, resp, err)
		}
	}
	reportFrom("127.0.0.1", "52:54:00:bd:00:01")
	reportFrom("127.0.0.2", "52:54:00:bd:00:02")
	rss := func() int {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				var kb int
				fmt.Sscan(v, &kb)
				return kb
			}
		}
		return 0
	}
	before := rss()
	flood, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(consoleAddr)))
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	quiet, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(consoleAddr)))
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	line := []byte(strings.Repeat("x", 999) + "\n")
	start := time.Now()
	sent := 0
	for i := 0; time.Since(start) < 10*time.Second; i++ {
		// 10 MB/s: 10,000 datagrams of 1000 bytes a second.
		for j := 0; j < 100; j++ {
			flood.Write(line)
			sent += len(line)
		}
		if i%100 == 0 {
			fmt.Fprintf(quiet, "quiet node line %d\n", i)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 10 * time.Millisecond)))
	}
	after := rss()
	t.Logf("flooded %d MB in %v; bootd RSS %d -> %d KiB", sent>>20, time.Since(start).Round(time.Millisecond), before, after)
	if after-before > 64<<10 {
		t.Errorf("RSS grew by %d KiB under the flood", after-before)
	}
	var n1, n2 web.NodeDetail
	if err := getJSON(d.http+"/api/v1/nodes/52:54:00:bd:00:01", &n1); err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, l := range n1.Console {
		size += len(l.Text)
	}
	if len(n1.Console) > 500 || size > 128<<10 {
		t.Errorf("flooding node's record: %d lines, %d bytes", len(n1.Console), size)
	}
	if err := getJSON(d.http+"/api/v1/nodes/52:54:00:bd:00:02", &n2); err != nil {
		t.Fatal(err)
	}
	if len(n2.Console) < 5 {
		t.Errorf("the quiet node's console lines were lost: %d of 10", len(n2.Console))
	}
	// And the quiet node's next report gets through.
	reportFrom("127.0.0.2", "52:54:00:bd:00:02")
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/bootd/bootd/web"
)

// freeUDP returns a UDP address on 127.0.0.1 that nothing listens on.
func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

func statusOf(t *testing.T, d *daemon) serveStatus {
	t.Helper()
	var st serveStatus
	if err := getJSON(d.http+"/api/v1/status", &st); err != nil {
		t.Fatalf("/api/v1/status: %v", err)
	}
	return st
}

// sighup sends SIGHUP and waits until the status API counts one more
// reload, ok or failed; it returns the reload state.
func sighup(t *testing.T, d *daemon) reloadState {
	t.Helper()
	before := statusOf(t, d).Reload
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if r := statusOf(t, d).Reload; r.OK+r.Failed > before.OK+before.Failed {
			return r
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("the reload never happened:\n%s", d.logText())
	return reloadState{}
}

// TestServeStartChecks: serve refuses to start when state_dir is no
// writable directory, naming every problem in its one error; it starts
// with what a build can fix, and lists that in /api/v1/status until it
// is fixed.
func TestServeStartChecks(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain-file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, stateDir := range []string{file, filepath.Join(dir, "missing")} {
		cfg := filepath.Join(dir, "bootd.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("state_dir: %s\ndhcp: {mode: \"off\"}\ntftp: {listen: \"\"}\nnfs: {listen: %q, allow: [127.0.0.1/32]}\n"+
			"http: {listen: %q}\nconsole: {listen: \"\"}\nnodes: [{mac: '52:54:00:bd:00:01', image: absent}]\n", stateDir, freePort(t), freePort(t))), 0o644)
		cmd := exec.Command(bootdBin, "serve", "--config", cfg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("state_dir %s: serve ended with %v, want exit status 1:\n%s", stateDir, err, out.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("state_dir %s: serve started:\n%s", stateDir, out.String())
		}
		// One error names both the fatal problem and the warning.
		for _, want := range []string{"state_dir: " + stateDir, "images/absent"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("state_dir %s: the error lacks %q:\n%s", stateDir, want, out.String())
			}
		}
	}

	// Warnings: serve runs and says what nodes lack.
	state := t.TempDir()
	makeImage(t, state, 10)
	loaders := t.TempDir()
	var loaderKeys string
	for _, name := range []string{"pxelinux.0", "ldlinux.c32", "syslinux.efi", "ldlinux.e64"} {
		if name != "syslinux.efi" {
			os.WriteFile(filepath.Join(loaders, name), []byte("loader"), 0o644)
		}
		loaderKeys += fmt.Sprintf("    %s: %s\n", name, filepath.Join(loaders, name))
	}
	nfsAddr, httpAddr, tftpAddr := freePort(t), freePort(t), freeUDP(t)
	cfg := filepath.Join(t.TempDir(), "bootd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("state_dir: %s\naddress: 127.0.0.1\ndhcp: {mode: \"off\"}\nnfs: {listen: %q, allow: [127.0.0.1/32]}\n"+
		"http: {listen: %q, boot: \"off\"}\nconsole: {listen: \"\"}\ntftp:\n  listen: %q\n  loaders:\n%s"+
		"defaults: {image: demo}\nnodes: [{mac: '52:54:00:bd:00:01'}, {mac: '52:54:00:bd:00:02', image: absent}]\n",
		state, nfsAddr, httpAddr, tftpAddr, loaderKeys)), 0o644)
	d := startBootdWith(t, cfg, nfsAddr)
	waitHTTP(t, d.http+"/api/v1/status")
	st := statusOf(t, d)
	var keys []string
	for _, p := range st.Problems {
		if p.Fatal {
			t.Errorf("a fatal problem in a running serve: %+v", p)
		}
		keys = append(keys, p.Key)
	}
	if want := []string{"images/absent", "images/demo", "tftp.loaders.syslinux.efi"}; !slices.Equal(keys, want) {
		t.Errorf("problems %q, want %q: %+v", keys, want, st.Problems)
	}
	if st.Nodes != 2 || st.DHCP != "off" || st.UnknownNodes != "boot" || st.Address != "127.0.0.1" || st.Version == "" {
		t.Errorf("status: %+v", st)
	}
	var services []string
	for _, l := range st.Listeners {
		services = append(services, l.Service+"="+l.Addr)
	}
	if want := []string{"tftp=" + tftpAddr, "nfs=" + nfsAddr, "http=" + httpAddr}; !slices.Equal(services, want) {
		t.Errorf("listeners %q, want %q", services, want)
	}
	// An initrd build and an image build later, demo boots; absent too.
	boot := filepath.Join(state, "images", "demo", "1", "boot")
	os.MkdirAll(boot, 0o755)
	os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(boot, "initrd.img"), []byte("initrd"), 0o644)
	os.MkdirAll(filepath.Join(state, "images", "absent", "1", "root"), 0o755)
	os.MkdirAll(filepath.Join(state, "images", "absent", "1", "boot"), 0o755)
	os.WriteFile(filepath.Join(state, "images", "absent", "1", "boot", "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(state, "images", "absent", "1", "boot", "initrd.img"), []byte("initrd"), 0o644)
	os.Symlink("1", filepath.Join(state, "images", "absent", "current"))
	st = statusOf(t, d)
	if len(st.Problems) != 1 || st.Problems[0].Key != "tftp.loaders.syslinux.efi" {
		t.Errorf("problems after the builds: %+v", st.Problems)
	}
	for _, im := range st.Images {
		if im.Current != 1 || !im.HasKernel || !im.HasInitrd || (im.Name == "demo") != im.Default {
			t.Errorf("image after the builds: %+v", im)
		}
	}
}

// slowWriter takes the first write, then blocks until released: a TFTP
// client that stops acknowledging mid-transfer.
type slowWriter struct {
	bytes.Buffer
	first   chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *slowWriter) Write(p []byte) (int, error) {
	if w.Len() > 0 {
		w.once.Do(func() { close(w.first); <-w.release })
	}
	return w.Buffer.Write(p)
}

// TestServeReload: SIGHUP applies a node added to the file (the API lists
// it, its iPXE script and pxelinux config are served) while an HTTP
// download, a TFTP transfer and an NFS mount made before go on intact;
// an invalid file keeps the table; a changed listen address is reported
// as needing a restart and left as it was.
func TestServeReload(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 10)
	boot := filepath.Join(state, "images", "demo", "1", "boot")
	os.MkdirAll(boot, 0o755)
	initrd, kernel := make([]byte, 64<<20), make([]byte, 1<<20)
	rand.Read(initrd)
	rand.Read(kernel)
	os.WriteFile(filepath.Join(boot, "initrd.img"), initrd, 0o644)
	os.WriteFile(filepath.Join(boot, "vmlinuz"), kernel, 0o644)

	nfsAddr, httpAddr, tftpAddr := freePort(t), freePort(t), freeUDP(t)
	cfg := filepath.Join(t.TempDir(), "bootd.yaml")
	write := func(nfsListen, extra string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("state_dir: %s\naddress: 127.0.0.1\ndhcp: {mode: \"off\"}\ntftp: {listen: %q}\n"+
			"nfs: {listen: %q, allow: [127.0.0.1/32], secure_ports: false}\nhttp: {listen: %q, boot: ipxe}\nconsole: {listen: \"\"}\n"+
			"unknown_nodes: ignore\nnodes:\n  - {mac: '52:54:00:bd:00:01', hostname: node01, image: demo}\n%s",
			state, tftpAddr, nfsListen, httpAddr, extra)), 0o644)
	}
	write(nfsAddr, "")
	d := startBootdWith(t, cfg, nfsAddr)
	waitHTTP(t, d.http+"/api/v1/status")

	target := mountTarget(t, nfsAddr, "/demo/1")
	readHostname := func() error {
		f, err := target.Open("/etc/hostname")
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err == nil && string(b) != "node\n" {
			err = fmt.Errorf("read %q", b)
		}
		return err
	}
	if err := readHostname(); err != nil {
		t.Fatal(err)
	}
	script := func() (int, string) {
		resp, err := http.Get(d.http + "/boot/52-54-00-bd-00-09.ipxe")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tftpGet := func(name string, w io.Writer) error {
		c, err := tftp.NewClient(tftpAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetTimeout(2 * time.Second)
		c.SetBlockSize(1468)
		wt, err := c.Receive(name, "octet")
		if err != nil {
			return err
		}
		_, err = wt.WriteTo(w)
		return err
	}
	if code, _ := script(); code == http.StatusOK {
		t.Fatal("node09 has an iPXE script before it is in the table")
	}
	if err := tftpGet("pxelinux.cfg/01-52-54-00-bd-00-09", io.Discard); err == nil {
		t.Fatal("node09 has a pxelinux config before it is in the table")
	}

	// Transfers in flight across the reload.
	resp, err := http.Get(d.http + "/boot/images/demo/1/initrd.img")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("initrd over HTTP: %v %v", resp, err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	slow := &slowWriter{first: make(chan struct{}), release: make(chan struct{})}
	tftpDone := make(chan error, 1)
	go func() { tftpDone <- tftpGet("images/demo/1/vmlinuz", slow) }()
	select {
	case <-slow.first:
	case err := <-tftpDone:
		t.Fatalf("TFTP transfer ended before the reload: %v", err)
	}

	write(nfsAddr, "  - {mac: '52:54:00:bd:00:09', hostname: node09, image: demo}\n")
	r := sighup(t, d)
	close(slow.release)
	if r.OK != 1 || r.Failed != 0 || !slices.Equal(r.Applied, []string{"nodes"}) || len(r.NeedsRestart) != 0 {
		t.Errorf("reload: %+v", r)
	}
	if code, body := script(); code != http.StatusOK || !strings.Contains(body, "images/demo/1/vmlinuz") {
		t.Errorf("node09's iPXE script after the reload: %d %q", code, body)
	}
	var cfgFile bytes.Buffer
	if err := tftpGet("pxelinux.cfg/01-52-54-00-bd-00-09", &cfgFile); err != nil || !strings.Contains(cfgFile.String(), "bootd.hostname=node09") {
		t.Errorf("node09's pxelinux config after the reload: %v %q", err, cfgFile.String())
	}
	var nodes web.NodeList
	if err := getJSON(d.http+"/api/v1/nodes", &nodes); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(nodes.Nodes, func(n web.NodeSummary) bool { return n.Hostname == "node09" }) {
		t.Errorf("/api/v1/nodes after the reload lacks node09: %+v", nodes.Nodes)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), initrd) {
		t.Errorf("the HTTP download begun before the reload: %d of %d bytes, %v", len(head)+len(rest), len(initrd), err)
	}
	if err := <-tftpDone; err != nil || !bytes.Equal(slow.Bytes(), kernel) {
		t.Errorf("the TFTP transfer begun before the reload: %d of %d bytes, %v", slow.Len(), len(kernel), err)
	}
	if err := readHostname(); err != nil {
		t.Errorf("the NFS mount made before the reload: %v", err)
	}

	// An invalid file: the reload fails, the table stays.
	write(nfsAddr, "  - {mac: nope}\n")
	r = sighup(t, d)
	if r.OK != 1 || r.Failed != 1 || !strings.Contains(r.Error, "nodes[1].mac") {
		t.Errorf("reload of an invalid file: %+v", r)
	}
	if code, _ := script(); code != http.StatusOK {
		t.Errorf("node09 lost after a failed reload: %d", code)
	}
	if st := statusOf(t, d); st.Nodes != 2 || st.UnknownNodes != "ignore" {
		t.Errorf("status after a failed reload: %d nodes, unknown_nodes %s", st.Nodes, st.UnknownNodes)
	}
	metrics := get(t, d.http+"/metrics")
	for _, want := range []string{`bootd_config_reloads_total{result="ok"} 1`, `bootd_config_reloads_total{result="failed"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A new NFS address needs a restart: NFS stays where it was; node09
	// removed is applied.
	write(freePort(t), "")
	r = sighup(t, d)
	if r.OK != 2 || !slices.Equal(r.NeedsRestart, []string{"nfs.listen"}) || !slices.Equal(r.Applied, []string{"nodes"}) {
		t.Errorf("reload with a new nfs.listen: %+v", r)
	}
	if err := readHostname(); err != nil {
		t.Errorf("NFS after a reload that changed nfs.listen: %v", err)
	}
	if code, _ := script(); code == http.StatusOK {
		t.Error("node09 still served after it was removed")
	}
}

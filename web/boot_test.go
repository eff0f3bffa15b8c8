package web

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

type bootFixture struct {
	url    string
	log    *events.Log
	srv    *Server
	kernel []byte
	initrd []byte
}

// newBootFixture serves a store with one generation on a real listener
// (Serve, with its connection tracking and sendfile path).
func newBootFixture(t *testing.T, stall time.Duration) *bootFixture {
	t.Helper()
	st := store.New(t.TempDir())
	os.MkdirAll(st.RootDir("img", 4), 0o755)
	os.MkdirAll(st.BootDir("img", 4), 0o755)
	f := &bootFixture{log: events.New(64), kernel: bytes.Repeat([]byte("kernel!"), 1<<20), initrd: bytes.Repeat([]byte("i"), 48<<20)}
	os.WriteFile(filepath.Join(st.BootDir("img", 4), "vmlinuz"), f.kernel, 0o644)
	os.WriteFile(filepath.Join(st.BootDir("img", 4), "initrd.img"), f.initrd, 0o644)
	if err := st.Publish("img", 4); err != nil {
		t.Fatal(err)
	}
	table, _ := nodes.NewTable([]nodes.Node{{MAC: mac1, Hostname: "node01", Image: "img"}, {MAC: mac2, Hostname: "node02", Image: "img"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	planner := boot.NewPlanner(boot.Options{Nodes: table, Store: st, IPXE: boot.IPXEOnly,
		NFS: netip.MustParseAddrPort("10.0.0.1:2049"), HTTP: netip.MustParseAddrPort(ln.Addr().String())})
	f.srv = New(Config{Log: f.log, Planner: planner, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, StallTimeout: stall,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	f.url = "http://" + ln.Addr().String()
	return f
}

func fetch(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestBootOverHTTP(t *testing.T) {
	f := newBootFixture(t, 0)
	// The script names the kernel and initrd; fetch what it names.
	req, _ := http.NewRequest("GET", f.url+"/boot/52-54-00-bd-00-01.ipxe", nil)
	resp, script := fetch(t, req)
	if resp.StatusCode != 200 || !bytes.HasPrefix(script, []byte("#!ipxe\n")) || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("script: %d %q\n%s", resp.StatusCode, resp.Header, script)
	}
	var urls []string
	for _, w := range strings.Fields(string(script)) {
		if strings.HasPrefix(w, "http://") {
			urls = append(urls, w)
		}
	}
	if len(urls) != 2 || !strings.HasSuffix(urls[0], "/boot/images/img/4/vmlinuz?mac=52-54-00-bd-00-01") {
		t.Fatalf("script URLs %q", urls)
	}
	for i, want := range [][]byte{f.kernel, f.initrd} {
		req, _ := http.NewRequest("GET", urls[i], nil)
		resp, b := fetch(t, req)
		if resp.StatusCode != 200 || !bytes.Equal(b, want) || resp.ContentLength != int64(len(want)) {
			t.Errorf("%s: status %d, %d bytes (Content-Length %d), want %d", urls[i], resp.StatusCode, len(b), resp.ContentLength, len(want))
		}
	}
	n, ok := f.log.Node(mac1)
	if !ok || n.Stage != events.StageInitrd || n.Image != "img" || n.Generation != 4 {
		t.Errorf("node record after the fetches: %+v", n)
	}
	if b := n.Current(); b == nil || len(b.Stages) != 3 || !strings.HasPrefix(b.Stages[0].Detail, "http 52-54-00-bd-00-01.ipxe -> img/4") {
		t.Errorf("stages: %+v", b)
	}

	// Range and HEAD, as http.ServeContent gives them.
	req, _ = http.NewRequest("GET", f.url+"/boot/images/img/4/vmlinuz", nil)
	req.Header.Set("Range", "bytes=7-13")
	if resp, b := fetch(t, req); resp.StatusCode != 206 || string(b) != "kernel!" {
		t.Errorf("range: %d %q", resp.StatusCode, b)
	}
	req, _ = http.NewRequest("HEAD", f.url+"/boot/images/img/4/initrd.img", nil)
	if resp, b := fetch(t, req); resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(f.initrd)) {
		t.Errorf("head: %d, %d bytes, length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
}

func TestBootOverHTTPRefuses(t *testing.T) {
	f := newBootFixture(t, 0)
	for _, p := range []string{
		"/boot/../../etc/passwd", "/boot/%2e%2e/%2e%2e/etc/passwd", "/boot/images/img/4/..%2f..%2f..%2fetc%2fpasswd",
		"/boot/images/img/5/vmlinuz", "/boot/images/img/4/root", "/boot/52-54-00-bd-00-09.ipxe", "/boot/pxelinux.0",
		"/boot/images/img/4/vmlinuz%00", "/boot/", "/boot/" + strings.Repeat("a/", 200),
	} {
		req, _ := http.NewRequest("GET", f.url+p, nil)
		resp, b := fetch(t, req)
		if resp.StatusCode != 404 || bytes.Contains(b, []byte("/")) || bytes.Contains(b, []byte("tmp")) {
			t.Errorf("%s: %d %q", p, resp.StatusCode, b)
		}
	}
	if n := len(f.log.Nodes()); n != 0 {
		t.Errorf("refused fetches made %d node records", n)
	}
	// An address known as node02 claiming node01's MAC in the URL is
	// recorded as itself.
	f.log.Record(events.Event{MAC: mac2, IP: "127.0.0.1", Stage: events.StageDHCP})
	req, _ := http.NewRequest("GET", f.url+"/boot/images/img/4/vmlinuz?mac=52-54-00-bd-00-01", nil)
	if resp, _ := fetch(t, req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n, ok := f.log.Node(mac1); ok && n.Stage != "" {
		t.Errorf("node01 got a stage from node02's address: %+v", n)
	}
	if n, _ := f.log.Node(mac2); n.Stage != events.StageKernel {
		t.Errorf("node02: %+v", n)
	}
}

// TestBootOverHTTPDropsStalledReader: a client that stops reading an
// initrd is dropped within the stall timeout, and its connection given
// back.
func TestBootOverHTTPDropsStalledReader(t *testing.T) {
	f := newBootFixture(t, time.Second)
	c, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(c, "GET /boot/images/img/4/initrd.img HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.srv.mu.Lock()
		conns := f.srv.conns
		f.srv.mu.Unlock()
		if conns == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a reader that stopped still holds its connection after 10 s (stall timeout 1 s)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And what it read was not recorded as a boot stage.
	if n := len(f.log.Nodes()); n != 0 {
		t.Errorf("a partial fetch made %d node records", n)
	}
}

// TestBootOverHTTPThousandAtOnce: a thousand nodes fetch a boot file (the
// 7 MiB kernel: the initrd's path, with less copying) at once, each from its own address (127.0.x.y), all within the connection
// caps: every download completes, whole, with no error.
func TestBootOverHTTPThousandAtOnce(t *testing.T) {
	f := newBootFixture(t, 0)
	const n = 1000
	url := f.url + "/boot/images/img/4/vmlinuz"
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		go func() {
			local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250), byte(1+i%250))}
			c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext}}
			defer c.CloseIdleConnections()
			<-start
			resp, err := c.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.Copy(io.Discard, resp.Body)
			if err == nil && (resp.StatusCode != 200 || got != int64(len(f.kernel))) {
				err = fmt.Errorf("status %d, %d bytes of %d", resp.StatusCode, got, len(f.kernel))
			}
			errs <- err
		}()
	}
	close(start)
	failed := 0
	for range n {
		if err := <-errs; err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d downloads failed", failed, n)
	}
}

package pid1

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/boot"
)

func testParams() (boot.Params, net.HardwareAddr) {
	mac, _ := net.ParseMAC("52:54:00:AB:CD:EF")
	return boot.Params{NFS: netip.MustParseAddrPort("10.0.0.1:2049"), Export: "/bookworm/3"}, mac
}

// The root report is the POST bootd's server takes: the fields the
// booted system's reports carry too, the MAC in lower-case colon form.
func TestSendReport(t *testing.T) {
	type got struct {
		method, path, ctype string
		body                map[string]any
	}
	ch := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := got{method: r.Method, path: r.URL.Path, ctype: r.Header.Get("Content-Type")}
		dec := json.NewDecoder(r.Body)
		dec.Decode(&g.body)
		ch <- g
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	params, mac := testParams()
	r := newReport(params, mac, "node01")
	r.Stage, r.Detail = "root", "root mounted in 12.3s"
	if err := sendReport(netip.MustParseAddrPort(srv.Listener.Addr().String()), r, reportTimeout); err != nil {
		t.Fatal(err)
	}
	g := <-ch
	if g.method != "POST" || g.path != boot.ReportPath || g.ctype != "application/json" {
		t.Errorf("%s %s, Content-Type %q", g.method, g.path, g.ctype)
	}
	want := map[string]any{"mac": "52:54:00:ab:cd:ef", "stage": "root", "image": "bookworm", "generation": 3.0,
		"hostname": "node01", "detail": "root mounted in 12.3s"}
	if len(g.body) != len(want) {
		t.Errorf("body %v, want %v", g.body, want)
	}
	for k, v := range want {
		if g.body[k] != v {
			t.Errorf("%s = %v, want %v", k, g.body[k], v)
		}
	}

	// What bootd refuses is said.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unknown node", http.StatusForbidden)
	}))
	defer refuse.Close()
	err := sendReport(netip.MustParseAddrPort(refuse.Listener.Addr().String()), r, reportTimeout)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "unknown node") {
		t.Errorf("a refused report: %v", err)
	}
}

// A master that accepts and never answers holds the boot no longer than
// the report's timeout; the report is not sent without one.
func TestSendReportGivesUp(t *testing.T) {
	if reportTimeout > 2*time.Second {
		t.Errorf("reports may hold the boot %v", reportTimeout)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	params, mac := testParams()
	start := time.Now()
	err = sendReport(netip.MustParseAddrPort(l.Addr().String()), newReport(params, mac, "n1"), reportTimeout)
	took := time.Since(start)
	if err == nil {
		t.Error("a report nobody answered succeeded")
	}
	if took < reportTimeout-100*time.Millisecond || took > reportTimeout+time.Second {
		t.Errorf("gave up after %v, want %v", took, reportTimeout)
	}
}

// What bootd would refuse is left out of a report; an export of another
// shape gives no image.
func TestNewReport(t *testing.T) {
	params, mac := testParams()
	for _, bad := range []string{"bad_host", "-x", "a b", "x'y", "$(reboot)", strings.Repeat("a", 254)} {
		if r := newReport(params, mac, bad); r.Hostname != "" {
			t.Errorf("hostname %q reported", bad)
		}
	}
	params.Export = "/some/where/else"
	if r := newReport(params, mac, "n1"); r.Image != "" || r.Generation != 0 || r.Hostname != "n1" || r.MAC != "52:54:00:ab:cd:ef" {
		t.Errorf("%+v", r)
	}
}

// report.env sources in bash to the values the booted system reports
// with; an IPv6 master is bracketed in BOOTD_REPORT only.
func TestReportEnv(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	params, mac := testParams()
	for to, host := range map[string]string{"10.0.0.1:8080": "10.0.0.1", "[fd00::1]:8080": "fd00::1"} {
		env := reportEnv(netip.MustParseAddrPort(to), newReport(params, mac, "node01"))
		out, err := exec.Command(bash, "-c", `set -u; eval "$1"; echo "$BOOTD_REPORT|$BOOTD_REPORT_HOST|$BOOTD_REPORT_PORT|$BOOTD_MAC|$BOOTD_IMAGE|$BOOTD_GENERATION|$BOOTD_HOSTNAME"`, "x", env).CombinedOutput()
		want := to + "|" + host + "|8080|52:54:00:ab:cd:ef|bookworm|3|node01\n"
		if err != nil || string(out) != want {
			t.Errorf("%s sourced: %q %v, want %q\n%s", to, out, err, want, env)
		}
	}
}

func TestForwardRule(t *testing.T) {
	if r := forwardRule(netip.AddrPort{}); strings.Contains(r, "@") || !strings.Contains(r, "receives no logs") {
		t.Errorf("without bootd.log: %q", r)
	}
	for ap, want := range map[string]string{"10.0.0.1:1514": "\n*.* @@10.0.0.1:1514\n", "[fd00::1]:514": "\n*.* @@[fd00::1]:514\n"} {
		if r := forwardRule(netip.MustParseAddrPort(ap)); !strings.HasSuffix(r, want) {
			t.Errorf("bootd.log=%s: %q", ap, r)
		}
	}
}

package web_test

import (
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
	"github.com/bootd/bootd/web"
)

const (
	pageMAC1 = "52:54:00:bd:10:01" // node01: a lost boot, then one at root
	pageMAC2 = "52:54:00:bd:10:02" // node02: at kernel
	pageMAC3 = "52:54:00:bd:10:03" // node03: in the table, never seen
	pageMAC9 = "52:54:00:bd:10:99" // not in the table, with a hostile name
)

// pageFixture is a server with three nodes of the table and a stranger.
type pageFixture struct {
	log *events.Log
	srv *web.Server
	ts  *httptest.Server
	// base is when node01's first boot started.
	base time.Time
}

func newPageFixture(t *testing.T) *pageFixture {
	t.Helper()
	table, err := nodes.NewTable([]nodes.Node{
		{MAC: pageMAC1, Hostname: "node01", IP: "10.0.0.11"},
		{MAC: pageMAC2, Hostname: "node02", IP: "10.0.0.12"},
		{MAC: pageMAC3, Hostname: "node03", IP: "10.0.0.13"},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &pageFixture{log: events.NewWithLimits(256, events.Limits{}), base: time.Now().Add(-90 * time.Second).Round(time.Second)}
	planner := boot.NewPlanner(boot.Options{Nodes: table, Defaults: nodes.Defaults{Image: "debian"}, BootUnknown: true, Store: store.New(t.TempDir())})
	f.srv = web.New(web.Config{Log: f.log, Planner: planner, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	f.ts = httptest.NewServer(f.srv)
	t.Cleanup(f.ts.Close)

	at := func(s float64) time.Time { return f.base.Add(time.Duration(s * float64(time.Second))) }
	rec := func(mac, ip string, stage events.Stage, s float64, detail string) {
		f.log.Record(events.Event{MAC: mac, IP: ip, Stage: stage, Time: at(s), Detail: detail, Hostname: map[string]string{
			pageMAC1: "node01", pageMAC2: "node02", pageMAC9: "<b>evil</b>"}[mac], Firmware: "uefi"})
	}
	// node01: the first boot stops at kernel and starts over (lost), the
	// second reaches root.
	rec(pageMAC1, "10.0.0.11", events.StageDHCP, 0, "proxy dhcp")
	rec(pageMAC1, "10.0.0.11", events.StageLoader, 1.2, "ipxe.efi")
	rec(pageMAC1, "10.0.0.11", events.StageConfig, 2.0, "")
	rec(pageMAC1, "10.0.0.11", events.StageKernel, 3.5, "")
	for i, st := range []events.Stage{events.StageDHCP, events.StageLoader, events.StageConfig, events.StageKernel, events.StageInitrd, events.StageRoot} {
		rec(pageMAC1, "10.0.0.11", st, 60+[]float64{0, 1.1, 1.9, 2.6, 6.3, 14.8}[i], "")
	}
	f.log.Record(events.Event{MAC: pageMAC1, Stage: events.StageConfig, Image: "debian", Generation: 3, Time: at(61)})
	rec(pageMAC2, "10.0.0.12", events.StageDHCP, 30, "")
	rec(pageMAC2, "10.0.0.12", events.StageLoader, 31, "")
	rec(pageMAC2, "10.0.0.12", events.StageKernel, 33, "")
	rec(pageMAC9, "10.0.0.99", events.StageDHCP, 80, "")
	f.log.Console("10.0.0.11", "Linux version 6.1.0-18-amd64\n<script>alert(1)</script>\n\x1b[31mred\x1b[0m & more\n", at(75))
	f.log.Syslog("10.0.0.11", "systemd[1]: Reached target Multi-User System.", at(76))
	f.log.Console("10.0.0.12", "EFI stub: Loaded initrd\n", at(34))
	return f
}

// get fetches path and returns the response and its body.
func (f *pageFixture) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(f.ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// page fetches a page that must be there, and checks its headers.
func (f *pageFixture) page(t *testing.T, path string) string {
	t.Helper()
	resp, body := f.get(t, path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
	}
	checkPageHeaders(t, path, resp)
	return body
}

func checkPageHeaders(t *testing.T, path string, resp *http.Response) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("GET %s: Content-Security-Policy %q allows inline code", path, csp)
	}
}

// tableRow returns the table row of mac in a page.
func tableRow(t *testing.T, page, mac string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<tr data-mac="` + regexp.QuoteMeta(mac) + `">(.*?)</tr>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no row for %s in\n%s", mac, page)
	}
	return m[1]
}

// mustContain checks that s has each of wants, as markup or as text (after
// html/template's escapes of such as '+').
func mustContain(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	text := html.UnescapeString(s)
	for _, w := range wants {
		if !strings.Contains(s, w) && !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

func TestListPage(t *testing.T) {
	f := newPageFixture(t)
	page := f.page(t, "/")
	mustContain(t, "node01's row", tableRow(t, page, pageMAC1),
		`href="/nodes/node01"`, ">node01</a>", pageMAC1, "10.0.0.11", "uefi", "debian/3", `<span class="badge s-root">root</span>`,
		`<time datetime="`+f.base.Add(74800*time.Millisecond).UTC().Format("2006-01-02T15:04:05.000Z")+`" title="`+
			f.base.Add(74800*time.Millisecond).UTC().Format(time.DateTime)+` UTC">`, " s ago</time>", "Reached target Multi-User System.")
	mustContain(t, "node02's row", tableRow(t, page, pageMAC2), ">node02</a>", `<span class="badge s-kernel">kernel</span>`, "EFI stub: Loaded initrd")
	mustContain(t, "node03's row", tableRow(t, page, pageMAC3), ">node03</a>", `<span class="badge s-unseen">unseen</span>`)
	// A node bootd boots though it is not in the table is linked by MAC
	// (its name is not a name) and marked.
	mustContain(t, "the stranger's row", tableRow(t, page, pageMAC9), `href="/nodes/`+pageMAC9+`"`, "&lt;b&gt;evil&lt;/b&gt;", "unlisted")
	// The counts per stage, every stage in order, zeros too.
	tiles := regexp.MustCompile(`data-stage="(\w*)"><b>(\d+)</b>`).FindAllStringSubmatch(page, -1)
	var got []string
	for _, m := range tiles {
		got = append(got, m[1]+"="+m[2])
	}
	if want := "=4 dhcp=1 loader=0 config=0 kernel=1 initrd=0 root=1 up=0 down=0 lost=0 unseen=1"; strings.Join(got, " ") != want {
		t.Errorf("tiles %q, want %q", strings.Join(got, " "), want)
	}
	mustContain(t, "the page", page, `<meta name="viewport"`, `<script src="/static/bootd.js?v=`, `<link rel="stylesheet" href="/static/bootd.css?v=`,
		`data-key="stage"`, `id="q"`)
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") {
		t.Error("the page has inline script or style")
	}
}

func TestListPageFilter(t *testing.T) {
	f := newPageFixture(t)
	for _, c := range []struct {
		query string
		macs  []string
	}{
		{"?q=node02", []string{pageMAC2}},
		{"?q=10.0.0.1", []string{pageMAC1, pageMAC2, pageMAC3}},
		{"?q=ROOT+node", []string{pageMAC1}},
		{"?q=debian", []string{pageMAC1}},
		{"?stage=unseen", []string{pageMAC3}},
		{"?stage=up", nil},
	} {
		page := f.page(t, "/"+c.query)
		var got []string
		for _, m := range regexp.MustCompile(`<tr data-mac="([^"]+)">`).FindAllStringSubmatch(page, -1) {
			got = append(got, m[1])
		}
		if strings.Join(got, " ") != strings.Join(c.macs, " ") {
			t.Errorf("GET /%s: rows %v, want %v", c.query, got, c.macs)
		}
		if c.macs == nil && !strings.Contains(page, "No node matches the filter.") {
			t.Errorf("GET /%s: no word that nothing matched", c.query)
		}
	}
}

func TestNodePage(t *testing.T) {
	f := newPageFixture(t)
	page := f.page(t, "/nodes/node01")
	mustContain(t, "node01's page", page,
		`data-mac="`+pageMAC1+`"`, `<span id="name">node01</span>`, `<span class="badge s-root">root</span>`,
		"10.0.0.11", "uefi", "debian/3", "listed",
		// The plan: the store has no image debian.
		`<p class="error">node `+pageMAC1+`: `,
		// Console and syslog, oldest first.
		"Linux version 6.1.0-18-amd64", "systemd[1]: Reached target Multi-User System.", "3 lines", "1 line<",
		// This boot, then the lost one.
		"<b>this boot</b>", "at root for", "<b>previous boot</b>", "lost after 60.0 s", `class="boot lost"`,
		"initrd +6.3s", "root +14.8s")
	if strings.Index(page, "Linux version") > strings.Index(page, "&amp; more") {
		t.Error("console lines out of order")
	}
	// A bar for each stage of each boot, each boot's bars side by side
	// and filling the row.
	boots := regexp.MustCompile(`(?s)<details class="boot[^"]*"[^>]*>(.*?)</details>`).FindAllStringSubmatch(page, -1)
	if len(boots) != 2 {
		t.Fatalf("%d boots on the timeline, want 2", len(boots))
	}
	wantStages := [][]string{{"dhcp", "loader", "config", "kernel", "initrd", "root"}, {"dhcp", "loader", "config", "kernel", "lost"}}
	for i, b := range boots {
		bars := regexp.MustCompile(`<svg class="bar s-(\w+)( open)?" x="([\d.]+)%" width="([\d.]+)%"`).FindAllStringSubmatch(b[1], -1)
		var stages []string
		x := 0.0
		for _, m := range bars {
			stages = append(stages, m[1])
			bx, _ := strconv.ParseFloat(m[3], 64)
			bw, _ := strconv.ParseFloat(m[4], 64)
			if bx < x-0.01 || bx > x+0.01 || bw < 0 {
				t.Errorf("boot %d: bar %s at %v%%, width %v%%: want it at %v%%", i, m[1], bx, bw, x)
			}
			x = bx + bw
		}
		if strings.Join(stages, " ") != strings.Join(wantStages[i], " ") {
			t.Errorf("boot %d: bars %v, want %v", i, stages, wantStages[i])
		}
		if x < 99.9 || x > 100.1 {
			t.Errorf("boot %d: the bars end at %v%%", i, x)
		}
	}
	// The boot under way draws its stage to now.
	mustContain(t, "this boot", boots[0][1], `class="bar s-root open"`)

	// By MAC and by address too.
	for _, key := range []string{pageMAC1, "10.0.0.11", "52-54-00-BD-10-01"} {
		mustContain(t, "GET /nodes/"+key, f.page(t, "/nodes/"+key), `<span id="name">node01</span>`)
	}
	// A node of the table never seen: its plan, no boots.
	mustContain(t, "node03's page", f.page(t, "/nodes/node03"), `<span class="badge s-unseen">unseen</span>`, "No boot seen yet.", "Nothing yet.")
}

func TestPagesEscapeWhatNodesSend(t *testing.T) {
	f := newPageFixture(t)
	for _, path := range []string{"/", "/nodes/node01", "/nodes/" + pageMAC9} {
		page := f.page(t, path)
		for _, bad := range []string{"<script>alert", "<b>evil", "\x1b"} {
			if strings.Contains(page, bad) {
				t.Errorf("GET %s: %q unescaped", path, bad)
			}
		}
	}
	mustContain(t, "node01's page", f.page(t, "/nodes/node01"), "&lt;script&gt;alert(1)&lt;/script&gt;", "?[31mred?[0m &amp; more")
	mustContain(t, "the stranger's page", f.page(t, "/nodes/"+pageMAC9), "&lt;b&gt;evil&lt;/b&gt;", "not listed")
}

func TestUnknownNode(t *testing.T) {
	f := newPageFixture(t)
	resp, body := f.get(t, "/nodes/node42%3Cscript%3E")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET an unknown node: %s", resp.Status)
	}
	checkPageHeaders(t, "/nodes/node42<script>", resp)
	mustContain(t, "the 404 page", body, "No node <b>node42&lt;script&gt;</b>", `href="/"`)
}

func TestStatic(t *testing.T) {
	f := newPageFixture(t)
	page := f.page(t, "/")
	for file, ctype := range map[string]string{"bootd.js": "text/javascript; charset=utf-8", "bootd.css": "text/css; charset=utf-8"} {
		resp, body := f.get(t, "/static/"+file)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ctype || len(body) < 1000 {
			t.Errorf("GET /static/%s: %s, %q, %d bytes", file, resp.Status, resp.Header.Get("Content-Type"), len(body))
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET /static/%s: Cache-Control %q, want no-cache without the version", file, cc)
		}
		// The page links the version, which is cached for good.
		m := regexp.MustCompile(`/static/` + regexp.QuoteMeta(file) + `\?v=(\w+)`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("the page does not link %s", file)
		}
		resp, _ = f.get(t, m[0])
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=31536000") {
			t.Errorf("GET %s: Cache-Control %q", m[0], cc)
		}
		req, _ := http.NewRequest("GET", f.ts.URL+"/static/"+file, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		cond, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		cond.Body.Close()
		if cond.StatusCode != http.StatusNotModified {
			t.Errorf("GET /static/%s with its ETag: %s", file, cond.Status)
		}
	}
	for _, path := range []string{"/static/list.html", "/static/layout.html", "/static/ui.go", "/static/bootd", "/static/.",
		"/static/..", "/static/...", "/static/..%2fui.go", "/static/ui%2fbootd.js", "/static/%2e%2e", "/static/bootd.js%2f", "/static/"} {
		resp, body := f.get(t, path)
		if resp.StatusCode == http.StatusOK && !strings.Contains(body, "<table") || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404 (or a redirect to the page)\n%.200s", path, resp.Status, body)
		}
		if strings.Contains(body, "{{") || strings.Contains(body, "package web") {
			t.Errorf("GET %s served a file that is not an asset", path)
		}
	}
}

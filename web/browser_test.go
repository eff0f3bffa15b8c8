package web_test

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/web"
)

// browser starts a headless Chromium for one part of a test, each part
// bounded to 30 s. Without chromium the test fails, or is skipped with
// -short.
func browser(t *testing.T, width, height int) (context.Context, *web.Browser) {
	t.Helper()
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	b, err := web.StartChromium(ctx, "", width, height)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return ctx, b
}

func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(web.ChromiumPath); err != nil {
		if testing.Short() {
			t.Skipf("no %s (apt-get install chromium)", web.ChromiumPath)
		}
		t.Fatalf("no %s: the page's browser test needs Debian's chromium (apt-get install chromium)", web.ChromiumPath)
	}
}

// screenshots is where the test leaves its screenshots: $BOOTD_SCREENSHOTS
// if set, else a temporary directory.
func screenshots(t *testing.T) string {
	dir := os.Getenv("BOOTD_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func shoot(t *testing.T, ctx context.Context, b *web.Browser, file string) {
	t.Helper()
	if err := b.Screenshot(ctx, file, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
}

func load(t *testing.T, ctx context.Context, b *web.Browser, url string) {
	t.Helper()
	if err := b.Navigate(ctx, url); err != nil {
		t.Fatal(err)
	}
	// The script fetched the data, rendered it, and follows the stream.
	if err := b.WaitFor(ctx, "document.querySelector('#live.on')"); err != nil {
		t.Fatal(err)
	}
}

func dom(t *testing.T, ctx context.Context, b *web.Browser) string {
	t.Helper()
	d, err := b.DOM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPageInBrowser(t *testing.T) {
	f := newPageFixture(t)
	dir := screenshots(t)
	ctx, b := browser(t, 1280, 900)

	// The table as the script draws it: both nodes at their stages.
	load(t, ctx, b, f.ts.URL+"/")
	page := dom(t, ctx, b)
	mustContain(t, "node01's row", tableRow(t, page, pageMAC1), ">node01</a>", `<span class="badge s-root">root</span>`, "debian/3")
	mustContain(t, "node02's row", tableRow(t, page, pageMAC2), ">node02</a>", `<span class="badge s-kernel">kernel</span>`)
	shoot(t, ctx, b, filepath.Join(dir, "nodes.png"))

	// What happened before a load is in it.
	f.log.Record(events.Event{MAC: pageMAC2, Stage: events.StageUp})
	load(t, ctx, b, f.ts.URL+"/")
	mustContain(t, "node02's row", tableRow(t, dom(t, ctx, b), pageMAC2), `<span class="badge s-up">up</span>`)

	// What happens while the page is open reaches it from the event
	// stream, well before the next 10 s poll.
	go func() {
		time.Sleep(time.Second)
		f.log.Record(events.Event{MAC: pageMAC1, Stage: events.StageUp})
	}()
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.WaitFor(wait, `document.querySelector('tr[data-mac="`+pageMAC1+`"] .badge').textContent === 'up'`); err != nil {
		t.Fatalf("node01 reached up, the page does not show it: %v", err)
	}
	page = dom(t, ctx, b)
	row := tableRow(t, page, pageMAC1)
	mustContain(t, "node01's row, updated", row, `<span class="badge s-up">up</span>`)
	if !regexp.MustCompile(`<td class="num">\d+\.\d s</td>`).MatchString(row) {
		t.Errorf("node01's row has no boot duration:\n%s", row)
	}
	mustContain(t, "the tiles", page, `data-stage="up"><b>2</b>`, `data-stage="root"><b>0</b>`)

	// Sorting by stage puts the unseen node last, the other way first.
	click := func(sel string) {
		t.Helper()
		if err := b.Eval(ctx, "document.querySelector('"+sel+"').click()", nil); err != nil {
			t.Fatal(err)
		}
	}
	order := func() string {
		t.Helper()
		var macs []string
		if err := b.Eval(ctx, `Array.from(document.querySelectorAll('#rows tr')).map(r => r.dataset.mac)`, &macs); err != nil {
			t.Fatal(err)
		}
		return strings.Join(macs, " ")
	}
	click(`th[data-key="stage"] button`)
	if got, want := order(), strings.Join([]string{pageMAC9, pageMAC1, pageMAC2, pageMAC3}, " "); got != want {
		t.Errorf("sorted by stage: %s, want %s", got, want)
	}
	click(`th[data-key="stage"] button`)
	if got, want := order(), strings.Join([]string{pageMAC3, pageMAC1, pageMAC2, pageMAC9}, " "); got != want {
		t.Errorf("sorted by stage, descending: %s, want %s", got, want)
	}
	// Filtering: by text, and by a stage's tile.
	if err := b.Eval(ctx, `(() => { const q = document.getElementById('q'); q.value = 'NODE0'; q.dispatchEvent(new Event('input')); })()`, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := order(), strings.Join([]string{pageMAC3, pageMAC1, pageMAC2}, " "); got != want {
		t.Errorf("filtered by node0: %s, want %s", got, want)
	}
	click(`.tile[data-stage="up"]`)
	if got, want := order(), strings.Join([]string{pageMAC1, pageMAC2}, " "); got != want {
		t.Errorf("filtered by node0 and up: %s, want %s", got, want)
	}
	var search string
	b.Eval(ctx, "location.search", &search)
	if search != "?q=NODE0&stage=up" {
		t.Errorf("the filter is not in the address: %q", search)
	}

	// One node: a bar for each stage reached, in both boots, and the
	// console and syslog; the script draws the same as the server did.
	load(t, ctx, b, f.ts.URL+"/nodes/node01")
	page = dom(t, ctx, b)
	first := f.page(t, "/nodes/node01")
	barRE := regexp.MustCompile(`<svg class="bar s-(\w+)( open)?" x="([\d.]+)%" width="([\d.]+)%"`)
	drawn := barRE.FindAllStringSubmatch(page, -1)
	served := barRE.FindAllStringSubmatch(first, -1)
	var stages []string
	for _, m := range drawn {
		stages = append(stages, m[1])
	}
	if got, want := strings.Join(stages, " "), "dhcp loader config kernel initrd root up dhcp loader config kernel lost"; got != want {
		t.Errorf("the timeline's bars: %s, want %s", got, want)
	}
	if len(drawn) != len(served) {
		t.Errorf("the script drew %d bars, the server %d", len(drawn), len(served))
	} else {
		for i := range drawn {
			for j := 3; j <= 4; j++ {
				d, _ := strconv.ParseFloat(drawn[i][j], 64)
				s, _ := strconv.ParseFloat(served[i][j], 64)
				if drawn[i][1] != served[i][1] || math.Abs(d-s) > 0.01 {
					t.Errorf("bar %d: the script drew %s, the server %s", i, drawn[i][0], served[i][0])
				}
			}
		}
	}
	mustContain(t, "node01's page", page, `<details class="boot lost"`, "up in ", "lost after 60.0 s",
		"Linux version 6.1.0-18-amd64", "&lt;script&gt;alert(1)&lt;/script&gt;", "Reached target Multi-User System.")
	if strings.Contains(page, "<script>alert") {
		t.Error("the console's script got into the page")
	}
	shoot(t, ctx, b, filepath.Join(dir, "node01.png"))

	// On a phone the table scrolls sideways, the page does not.
	pctx, phone := browser(t, 390, 844)
	load(t, pctx, phone, f.ts.URL+"/")
	var fits bool
	if err := phone.Eval(pctx, `document.documentElement.scrollWidth <= window.innerWidth && document.querySelector('.scroll').scrollWidth > document.querySelector('.scroll').clientWidth`, &fits); err != nil {
		t.Fatal(err)
	}
	if !fits {
		t.Error("on a phone, the page is wider than the screen, or the table does not scroll")
	}
	shoot(t, pctx, phone, filepath.Join(dir, "nodes-phone.png"))
	load(t, pctx, phone, f.ts.URL+"/nodes/node01")
	shoot(t, pctx, phone, filepath.Join(dir, "node01-phone.png"))
}

// Without the event stream (bootd has too many), the page polls.
func TestPageInBrowserPolls(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the page's 10 s poll")
	}
	needChromium(t)
	f := newPageFixture(t)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/events" {
			http.Error(w, "too many event streams", http.StatusServiceUnavailable)
			return
		}
		f.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	ctx, b := browser(t, 1280, 900)
	if err := b.Navigate(ctx, ts.URL+"/"); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(ctx, "document.querySelector('#live.poll')"); err != nil {
		t.Fatal(err)
	}
	f.log.Record(events.Event{MAC: pageMAC2, Stage: events.StageUp})
	wait, cancel := context.WithTimeout(ctx, 13*time.Second)
	defer cancel()
	if err := b.WaitFor(wait, `document.querySelector('tr[data-mac="`+pageMAC2+`"] .badge').textContent === 'up'`); err != nil {
		t.Fatalf("node02 reached up, the polling page does not show it: %v", err)
	}
}

// The helper the lab uses: one load, the DOM and a screenshot.
func TestChromium(t *testing.T) {
	needChromium(t)
	f := newPageFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shot := filepath.Join(t.TempDir(), "shot.png")
	page, err := web.Chromium(ctx, "", f.ts.URL+"/nodes/node02", shot, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "node02's page", page, `<span id="name">node02</span>`, `class="live on"`)
	if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
		t.Errorf("no screenshot: %v", err)
	}
}

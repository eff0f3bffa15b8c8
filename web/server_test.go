package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

const (
	mac1 = "52:54:00:bd:00:01"
	mac2 = "52:54:00:bd:00:02"
)

type fixture struct {
	log *events.Log
	srv *Server
	ts  *httptest.Server
	reg *prometheus.Registry
}

func newFixture(t *testing.T, allow ...string) *fixture {
	t.Helper()
	table, err := nodes.NewTable([]nodes.Node{{MAC: mac1, Hostname: "node01"}, {MAC: mac2, Hostname: "node02", IP: "10.0.0.12"}})
	if err != nil {
		t.Fatal(err)
	}
	if allow == nil {
		allow = []string{"127.0.0.0/8"}
	}
	var prefixes []netip.Prefix
	for _, a := range allow {
		prefixes = append(prefixes, netip.MustParsePrefix(a))
	}
	f := &fixture{log: events.New(64), reg: prometheus.NewPedanticRegistry()}
	f.srv = New(Config{Log: f.log, Planner: boot.NewPlanner(boot.Options{Nodes: table, Store: store.New(t.TempDir())}), Allow: prefixes, Registry: f.reg})
	f.ts = httptest.NewServer(f.srv)
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fixture) get(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(f.ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func (f *fixture) report(t *testing.T, body string) int {
	t.Helper()
	resp, err := http.Post(f.ts.URL+"/api/v1/report", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestNodeListHasTheTableAndWhatWasSeen(t *testing.T) {
	f := newFixture(t)
	f.log.Record(events.Event{MAC: mac1, Stage: events.StageDHCP, Firmware: "bios"})
	f.log.Record(events.Event{MAC: "52:54:00:99:99:99", IP: "10.0.0.99", Stage: events.StageConfig})
	var l NodeList
	if code := f.get(t, "/api/v1/nodes", &l); code != 200 {
		t.Fatalf("status %d", code)
	}
	var got []string
	for _, n := range l.Nodes {
		got = append(got, n.Hostname+"="+string(n.Stage))
	}
	if strings.Join(got, " ") != "node01=dhcp node02=unseen =config" {
		t.Errorf("nodes: %v", got)
	}
	if l.Counts[events.StageDHCP] != 1 || l.Counts[StageUnseen] != 1 || l.Counts[events.StageConfig] != 1 {
		t.Errorf("counts: %v", l.Counts)
	}
	if !l.Nodes[0].Known || l.Nodes[2].Known {
		t.Errorf("known: %v %v", l.Nodes[0].Known, l.Nodes[2].Known)
	}
}

func TestNodeDetail(t *testing.T) {
	f := newFixture(t)
	f.log.Record(events.Event{MAC: mac1, IP: "10.0.0.11", Stage: events.StageConfig})
	f.log.Console("10.0.0.11", "hello\n", time.Time{})
	for _, key := range []string{mac1, "node01", "10.0.0.11"} {
		var d NodeDetail
		if code := f.get(t, "/api/v1/nodes/"+key, &d); code != 200 || d.MAC != mac1 || d.Hostname != "node01" || len(d.Console) != 1 || d.Plan.Error == "" {
			t.Errorf("%s: %d %+v", key, code, d)
		}
	}
	var d NodeDetail
	if code := f.get(t, "/api/v1/nodes/node02", &d); code != 200 || d.Stage != StageUnseen || d.IP != "10.0.0.12" {
		t.Errorf("unseen table node: %d %+v", code, d)
	}
	if code := f.get(t, "/api/v1/nodes/node99", nil); code != 404 {
		t.Errorf("unknown node: %d", code)
	}
}

func TestReports(t *testing.T) {
	f := newFixture(t)
	ok := `{"mac":"` + mac1 + `","stage":"root","image":"trixie","generation":3,"hostname":"node01","detail":"root mounted in 4.2s"}`
	if code := f.report(t, ok); code != http.StatusNoContent {
		t.Fatalf("report: %d", code)
	}
	n, _ := f.log.Node(mac1)
	if n.Stage != events.StageRoot || n.IP != "127.0.0.1" || n.Image != "trixie" || n.Generation != 3 {
		t.Errorf("after report: %+v", n)
	}
	for _, c := range []struct {
		body string
		code int
	}{
		{`{"mac":"` + mac1 + `","stage":"up"`, 400},                                               // cut short
		{`{"mac":"` + mac1 + `","stage":"kernel"}`, 400},                                          // a stage nodes do not report
		{`{"mac":"52:54:00","stage":"up"}`, 400},                                                  // bad MAC
		{`{"mac":"` + mac1 + `","stage":"up","detail":"a\nb"}`, 400},                              // a forged log line
		{`{"mac":"` + mac1 + `","stage":"up","image":"../etc"}`, 400},                             // bad image
		{`{"mac":"` + mac1 + `","stage":"up","extra":1}`, 400},                                    // unknown field
		{`{"mac":"` + mac1 + `","stage":"up","detail":"` + strings.Repeat("x", 5000) + `"}`, 400}, // too big
		{`{"mac":"52:54:00:99:99:99","stage":"up"}`, 403},                                         // not a node bootd boots
		{`{"mac":"` + mac2 + `","stage":"up"}`, 403},                                              // 127.0.0.1 is node01's
	} {
		if code := f.report(t, c.body); code != c.code {
			t.Errorf("%.60s: %d, want %d", c.body, code, c.code)
		}
	}
	if n, _ := f.log.Node(mac2); n.Stage != "" {
		t.Errorf("node02 changed by another's report: %+v", n)
	}
	counts := f.metrics(t)
	for k, want := range map[string]float64{
		`bootd_reports_total{result="accepted"}`:     1,
		`bootd_reports_total{result="malformed"}`:    7,
		`bootd_reports_total{result="unknown_node"}`: 1,
		`bootd_reports_total{result="forged"}`:       1,
		`bootd_nodes{stage="root"}`:                  1,
		`bootd_nodes{stage="unseen"}`:                1,
	} {
		if counts[k] != want {
			t.Errorf("%s = %v, want %v", k, counts[k], want)
		}
	}
}

// scrape fetches /metrics and parses it as Prometheus does.
func (f *fixture) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(f.ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metrics is the scrape as name{labels} -> value.
func (f *fixture) metrics(t *testing.T) map[string]float64 {
	out := map[string]float64{}
	for name, fam := range f.scrape(t) {
		for _, m := range fam.Metric {
			key := name
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if labels != nil {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestBootDurationMetric(t *testing.T) {
	f := newFixture(t)
	t0 := time.Now()
	f.log.Record(events.Event{MAC: mac1, Stage: events.StageDHCP, Time: t0})
	f.log.Record(events.Event{MAC: mac1, Stage: events.StageUp, Time: t0.Add(50 * time.Second)})
	f.log.Record(events.Event{MAC: mac2, Stage: events.StageDHCP, Time: t0})
	f.log.Record(events.Event{MAC: mac2, Stage: events.StageUp, Time: t0.Add(500 * time.Second)})
	h := f.scrape(t)["bootd_boot_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 550 {
		t.Fatalf("histogram: %v", h)
	}
	for _, b := range h.Bucket {
		want := uint64(0)
		if b.GetUpperBound() >= 60 {
			want = 1
		}
		if b.GetUpperBound() >= 600 {
			want = 2
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	// The pedantic registry checks every metric's consistency.
	if _, err := f.reg.Gather(); err != nil {
		t.Error(err)
	}
}

func TestEventStream(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.ts.URL+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	line, _ := r.ReadString('\n')
	if line != "event: hello\n" {
		t.Fatalf("first line %q", line)
	}
	f.log.Record(events.Event{MAC: mac1, Stage: events.StageDHCP})
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(data, mac1) {
			var e events.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil || e.Stage != events.StageDHCP {
				t.Errorf("event %q: %v", data, err)
			}
			return
		}
	}
}

// TestStrangersClosedAtAccept: a client outside Allow gets no answer at
// all, and connections beyond the per-client cap are closed.
// (Beyond the total cap, connections wait: TestTotalCapQueues.)
func TestStrangersClosedAtAccept(t *testing.T) {
	for _, c := range []struct {
		name             string
		allow            string
		total, perClient int
		hold             int // connections held open first
		why              string
	}{
		{"not allowed", "10.0.0.0/8", 0, 0, 0, "not_allowed"},
		{"over the per-client cap", "127.0.0.0/8", 0, 2, 2, "too_many_per_client"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			srv := New(Config{Log: events.New(8), Allow: []netip.Prefix{netip.MustParsePrefix(c.allow)},
				MaxConns: c.total, MaxConnsPerClient: c.perClient, Registry: reg})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- srv.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for range c.hold {
				conn, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, conn)
			}
			time.Sleep(100 * time.Millisecond) // let the server accept them
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte("GET /api/v1/nodes HTTP/1.0\r\n\r\n"))
			b := make([]byte, 64)
			n, err := conn.Read(b)
			if n != 0 || err == nil {
				t.Errorf("got %q, %v; want the connection closed unanswered", b[:n], err)
			}
			if got := testutil.ToFloat64(srv.refused.WithLabelValues(c.why)); got != 1 {
				t.Errorf("refused{%s} = %v, want 1", c.why, got)
			}
		})
	}
}

// TestEventStreamsBounded: past MaxStreams, a new stream is refused; one
// that ends frees its place.
func TestEventStreamsBounded(t *testing.T) {
	log := events.New(8)
	srv := New(Config{Log: log, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, MaxStreams: 2})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/v1/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, cancel
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for range 2 {
		resp, cancel := open()
		cancels = append(cancels, cancel)
		if resp.StatusCode != 200 {
			t.Fatalf("stream within the cap: %s", resp.Status)
		}
	}
	resp, cancel := open()
	cancel()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a third stream: %s, want 503", resp.Status)
	}
	cancels[0]()
	for range 50 {
		resp, cancel := open()
		if resp.StatusCode == 200 {
			cancel()
			return
		}
		cancel()
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("a stream that ended did not free its place")
}

// TestTotalCapQueues: with every connection slot taken, a new connection
// is not refused (an iPXE ROM refused at its script fetch ends its boot):
// it waits in the kernel's backlog and is served when a slot frees.
func TestTotalCapQueues(t *testing.T) {
	srv := New(Config{Log: events.New(8), Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxConns: 3, MaxConnsPerClient: 16, Registry: prometheus.NewPedanticRegistry()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // the server takes all three slots
	late, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	late.Write([]byte("GET /api/v1/nodes HTTP/1.0\r\n\r\n"))
	late.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 64)
	if n, err := late.Read(b); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("with every slot taken: got %q, %v; want to wait (no answer, not closed)", b[:n], err)
	}
	held[0].Close()
	late.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := late.Read(b)
	if !strings.HasPrefix(string(b[:n]), "HTTP/1.0 200") {
		t.Fatalf("once a slot freed: got %q, %v; want the answer", b[:n], err)
	}
	if got := testutil.ToFloat64(srv.refused.WithLabelValues("too_many")); got != 0 {
		t.Errorf("refused{too_many} = %v, want 0", got)
	}
}

// TestStatusAPI: /api/v1/status is what Config.Status returns at each
// request, and absent without one.
func TestStatusAPI(t *testing.T) {
	f := newFixture(t)
	if code := f.get(t, "/api/v1/status", nil); code != http.StatusNotFound {
		t.Errorf("without Config.Status: %d", code)
	}
	calls := 0
	srv := New(Config{Log: f.log, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Status: func() any { calls++; return map[string]int{"calls": calls} }})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	for want := 1; want <= 2; want++ {
		var got map[string]int
		resp, err := http.Get(ts.URL + "/api/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || got["calls"] != want {
			t.Errorf("request %d: %v %v", want, got, err)
		}
	}
}

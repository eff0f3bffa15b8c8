// Package web is bootd's one HTTP server: the status page an admin watches
// a cluster boot on, the JSON API that `bootd nodes`, the lab and scripts
// read, the Prometheus metrics, the endpoint where booting nodes report
// their stages, and the boot tree for iPXE and UEFI HTTP Boot (boot.go). Everything it shows comes from the node records in
// package events; it keeps no state of its own.
//
// Everything but the reports is read-only. Who may connect at all is
// decided at accept (Config.Allow), and what one client may hold
// (connections, event streams, request sizes) is bounded.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

// Config is what the server shows and who may see it.
type Config struct {
	Log     *events.Log
	Planner *boot.Planner // the node table and each node's boot plan
	// Allow lists who may connect (the page, the API and reports alike);
	// others are closed at accept.
	Allow []netip.Prefix
	// Registry holds the metrics of every service; /metrics serves it.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// MaxConns and MaxConnsPerClient bound open connections (1024, 16: a
	// boot storm fetches its kernels and initrds here);
	// MaxStreams bounds /api/v1/events streams (64).
	MaxConns, MaxConnsPerClient, MaxStreams int
	// Status, if set, is GET /api/v1/status: what the serving bootd is
	// (version, listeners, images) and what keeps nodes from booting,
	// computed by the caller at each request.
	Status func() any
	// StallTimeout is how long one chunk (1 MiB) of a boot file may take
	// to leave (30 s): a client that stops reading is dropped after it,
	// however large the file.
	StallTimeout time.Duration
}

// Server serves the page, the API, the metrics and the reports.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	streams atomic.Int32
	reports *prometheus.CounterVec
	refused *prometheus.CounterVec
	mu      sync.Mutex
	perIP   map[netip.Addr]int
	slots   chan struct{} // one per open connection, MaxConns in all
	conns   int
}

// New returns a server; it registers its own metrics in cfg.Registry.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxConnsPerClient <= 0 {
		cfg.MaxConnsPerClient = 16
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "http"), mux: http.NewServeMux(), perIP: map[netip.Addr]int{},
		slots: make(chan struct{}, cfg.MaxConns)}
	s.reports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_reports_total",
		Help: "Stage reports from nodes, by result (accepted, or why dropped).",
	}, []string{"result"})
	for _, r := range []string{"accepted", "not_allowed", "malformed", "unknown_node", "forged"} {
		s.reports.WithLabelValues(r)
	}
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_http_connections_refused_total",
		Help: "HTTP connections closed at accept, by reason.",
	}, []string{"reason"})
	for _, r := range []string{"not_allowed", "too_many", "too_many_per_client"} {
		s.refused.WithLabelValues(r)
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.reports, s.refused, newNodeCollector(cfg.Log, s.List))
	}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.HandleFunc("GET /nodes/{node}", s.nodePage)
	s.mux.HandleFunc("GET /static/{file}", s.static)
	s.mux.HandleFunc("GET /api/v1/nodes", s.apiNodes)
	s.mux.HandleFunc("GET /api/v1/nodes/{node}", s.apiNode)
	s.mux.HandleFunc("GET /api/v1/events", s.apiEvents)
	if cfg.Status != nil {
		s.mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, cfg.Status()) })
	}
	s.mux.HandleFunc("POST /api/v1/report", s.report)
	s.mux.HandleFunc("GET /boot/{path...}", s.bootFile)
	if cfg.Registry != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{ErrorLog: nil, MaxRequestsInFlight: 4}))
	}
	return s
}

// ServeHTTP serves one request from an allowed address.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(remoteAddr(r)) {
		// Reaches here only in tests and behind a proxy: the listener
		// closes strangers at accept.
		if r.URL.Path == "/api/v1/report" {
			s.reports.WithLabelValues("not_allowed").Inc()
		}
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) allowed(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.cfg.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ListenAndServe serves on addr until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http: listening on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// No WriteTimeout: event streams are long; each handler sets
		// its own write deadline.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("serving the status page, API and metrics", "addr", ln.Addr().String())
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			hs.Shutdown(sctx)
			cancel()
			hs.Close()
		case <-done:
		}
	}()
	err := hs.Serve(&limitListener{Listener: ln, s: s, ctx: ctx})
	close(done)
	if ctx.Err() != nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("http: %w", err)
}

// limitListener closes connections from addresses outside Allow and
// beyond the per-client cap as soon as they are accepted, and rides out
// accept errors (out of descriptors) instead of ending the server. At the
// total cap it accepts nothing until a connection closes: the kernel's
// backlog holds the new ones meanwhile, so a storm of nodes queues where
// a refusal would end an iPXE boot at its script.
type limitListener struct {
	net.Listener
	s   *Server
	ctx context.Context
}

func (l *limitListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		if !l.s.waitSlot(l.ctx) {
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			l.s.freeSlot()
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return nil, err
		}
		backoff = 5 * time.Millisecond
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		a := ap.Addr().Unmap()
		if !l.s.allowed(a) {
			l.s.freeSlot()
			l.s.refused.WithLabelValues("not_allowed").Inc()
			c.Close()
			continue
		}
		if why := l.s.take(a); why != "" {
			l.s.freeSlot()
			l.s.refused.WithLabelValues(why).Inc()
			c.Close()
			continue
		}
		return &trackedConn{Conn: c, release: func() { l.s.give(a) }}, nil
	}
}

// waitSlot takes one of the MaxConns connection slots, waiting for one
// to free; false if ctx ended first.
func (s *Server) waitSlot(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) freeSlot() { <-s.slots }

// take counts a connection from a, or says which cap it is over.
func (s *Server) take(a netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[a] >= s.cfg.MaxConnsPerClient {
		return "too_many_per_client"
	}
	s.conns++
	s.perIP[a]++
	return ""
}

func (s *Server) give(a netip.Addr) {
	s.mu.Lock()
	s.conns--
	if s.perIP[a]--; s.perIP[a] <= 0 {
		delete(s.perIP, a)
	}
	s.mu.Unlock()
	s.freeSlot()
}

type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// ReadFrom keeps sendfile for boot files: net/http looks for it on the
// connection, and embedding net.Conn hides the TCP connection's.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *trackedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// NodeSummary is one row of the node list.
type NodeSummary struct {
	MAC        string       `json:"mac"`
	IP         string       `json:"ip,omitempty"`
	Hostname   string       `json:"hostname,omitempty"`
	Firmware   string       `json:"firmware,omitempty"`
	Image      string       `json:"image,omitempty"`
	Generation int          `json:"generation,omitempty"`
	Stage      events.Stage `json:"stage"` // "unseen" for a node of the table bootd has not seen
	Since      time.Time    `json:"since,omitzero"`
	LastSeen   time.Time    `json:"last_seen,omitzero"`
	// LastBootSeconds is how long the latest boot that came up took, from
	// its first stage to up.
	LastBootSeconds float64     `json:"last_boot_seconds,omitempty"`
	LastLine        events.Line `json:"last_line,omitzero"`
	// Known is true for a node of the node table.
	Known bool `json:"known"`
}

// StageUnseen is the stage of a node in the table bootd has not seen.
const StageUnseen events.Stage = "unseen"

// NodeList is GET /api/v1/nodes.
type NodeList struct {
	Now    time.Time            `json:"now"`
	Counts map[events.Stage]int `json:"counts"` // nodes per stage
	Nodes  []NodeSummary        `json:"nodes"`  // by hostname, then MAC
}

// Plan is what a node boots now, from the boot plan.
type Plan struct {
	Image      string `json:"image,omitempty"`
	Generation int    `json:"generation,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	Initrd     string `json:"initrd,omitempty"`
	Cmdline    string `json:"cmdline,omitempty"`
	Error      string `json:"error,omitempty"` // why there is no plan
}

// NodeDetail is GET /api/v1/nodes/{node}: the whole record, its timeline,
// console and syslog, and its plan.
type NodeDetail struct {
	events.Node
	Known bool `json:"known"`
	Plan  Plan `json:"plan"`
}

func (s *Server) table() []nodes.Node {
	if s.cfg.Planner == nil {
		return nil
	}
	return s.cfg.Planner.Nodes()
}

// List returns the node list: every node of the table and every node
// bootd has seen.
func (s *Server) List() NodeList {
	seen := map[string]bool{}
	l := NodeList{Now: time.Now().UTC(), Counts: map[events.Stage]int{}}
	hostOf := map[string]string{}
	// One read of the table: a config reload may replace it meanwhile.
	table := s.table()
	for _, n := range table {
		hostOf[n.HardwareAddr().String()] = n.Hostname
	}
	for _, n := range s.cfg.Log.Nodes() {
		seen[n.MAC] = true
		h, known := hostOf[n.MAC]
		if h == "" {
			h = n.Hostname
		}
		sum := NodeSummary{MAC: n.MAC, IP: n.IP, Hostname: h, Firmware: n.Firmware, Image: n.Image,
			Generation: n.Generation, Stage: n.Stage, Since: n.Since, LastSeen: n.LastSeen,
			LastBootSeconds: n.LastBootDuration().Seconds(), Known: known}
		if len(n.Console) > 0 {
			sum.LastLine = n.Console[0]
		}
		if sum.Stage == "" {
			sum.Stage = StageUnseen
		}
		l.Nodes = append(l.Nodes, sum)
	}
	for _, n := range table {
		mac := n.HardwareAddr().String()
		if !seen[mac] {
			l.Nodes = append(l.Nodes, NodeSummary{MAC: mac, IP: n.IP, Hostname: n.Hostname, Stage: StageUnseen, Known: true})
		}
	}
	for _, n := range l.Nodes {
		l.Counts[n.Stage]++
	}
	sort.Slice(l.Nodes, func(i, j int) bool {
		a, b := l.Nodes[i], l.Nodes[j]
		if a.Hostname != b.Hostname {
			// Named nodes first.
			if a.Hostname == "" || b.Hostname == "" {
				return b.Hostname == ""
			}
			return a.Hostname < b.Hostname
		}
		return a.MAC < b.MAC
	})
	return l
}

// Detail returns one node, by MAC, IP or hostname.
func (s *Server) Detail(key string) (NodeDetail, bool) {
	var d NodeDetail
	n, ok := s.cfg.Log.Node(key)
	var entry nodes.Node
	for _, e := range s.table() {
		mac := e.HardwareAddr().String()
		if (ok && mac == n.MAC) || (!ok && (strings.EqualFold(mac, key) || e.Hostname == key || e.IP == key)) {
			entry, d.Known = e, true
			break
		}
	}
	if !ok && d.Known {
		// Named by its table hostname or address: its record is by MAC.
		n, ok = s.cfg.Log.Node(entry.HardwareAddr().String())
	}
	switch {
	case ok:
		d.Node = n
	case d.Known:
		d.Node = events.Node{MAC: entry.HardwareAddr().String(), IP: entry.IP, Stage: StageUnseen}
	default:
		return d, false
	}
	if d.Known && entry.Hostname != "" {
		d.Hostname = entry.Hostname
	}
	if d.Stage == "" {
		d.Stage = StageUnseen
	}
	d.Plan = s.plan(d.MAC)
	return d, true
}

func (s *Server) plan(mac string) Plan {
	if s.cfg.Planner == nil {
		return Plan{Error: "no boot plan"}
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return Plan{Error: err.Error()}
	}
	spec, err := s.cfg.Planner.Plan(hw)
	if errors.Is(err, boot.ErrIgnored) {
		return Plan{Error: "not in the node table, and unknown_nodes is ignore: bootd does not answer it"}
	}
	if err != nil {
		return Plan{Error: err.Error()}
	}
	return Plan{Image: spec.Image, Generation: spec.Generation, Kernel: spec.Kernel, Initrd: spec.Initrd, Cmdline: spec.Cmdline()}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30 * time.Second))
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) apiNodes(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.List()) }

func (s *Server) apiNode(w http.ResponseWriter, r *http.Request) {
	d, ok := s.Detail(r.PathValue("node"))
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "no such node: " + r.PathValue("node")})
		return
	}
	writeJSON(w, d)
}

// apiEvents streams every new event as server-sent events until the
// client goes; a client that cannot keep up misses events.
func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	if s.streams.Add(1) > int32(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		http.Error(w, "too many event streams", http.StatusServiceUnavailable)
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ch, stop := s.cfg.Log.Subscribe(256)
	defer stop()
	send := func(data []byte, event string) error {
		rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if event != "" {
			fmt.Fprintf(w, "event: %s\n", event)
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send([]byte(`{}`), "hello"); err != nil {
		return
	}
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			// A comment keeps proxies from closing an idle stream and
			// finds a client that is gone.
			rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case e := <-ch:
			b, _ := json.Marshal(e)
			if send(b, "node") != nil {
				return
			}
		}
	}
}

// Report is the body of POST /api/v1/report: a booting node says it
// reached a stage. The init sends root; the image's bootd-report.service
// sends up and down.
type Report struct {
	MAC        string       `json:"mac"`
	Stage      events.Stage `json:"stage"`
	Image      string       `json:"image,omitempty"`
	Generation int          `json:"generation,omitempty"`
	Hostname   string       `json:"hostname,omitempty"`
	Detail     string       `json:"detail,omitempty"`
}

// maxReport bounds a report's body.
const maxReport = 4 << 10

var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$`)

// check says what is wrong with a report, or "".
func (rep *Report) check() string {
	hw, err := net.ParseMAC(rep.MAC)
	if err != nil || len(hw) != 6 {
		return "mac"
	}
	rep.MAC = hw.String()
	switch rep.Stage {
	case events.StageRoot, events.StageUp, events.StageDown:
	default:
		return "stage"
	}
	if rep.Image != "" && store.ValidName(rep.Image) != nil || rep.Generation < 0 {
		return "image"
	}
	if rep.Hostname != "" && !hostnameRE.MatchString(rep.Hostname) {
		return "hostname"
	}
	if len(rep.Detail) > 200 || strings.ContainsFunc(rep.Detail, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "detail"
	}
	return ""
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	ip := remoteAddr(r)
	log := s.log.With("ip", ip.String())
	var rep Report
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReport))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		s.reports.WithLabelValues("malformed").Inc()
		log.Debug("report dropped: malformed", "err", err)
		http.Error(w, "malformed report", http.StatusBadRequest)
		return
	}
	if what := rep.check(); what != "" {
		s.reports.WithLabelValues("malformed").Inc()
		log.Debug("report dropped: bad field", "field", what)
		http.Error(w, "bad report field: "+what, http.StatusBadRequest)
		return
	}
	log = log.With("mac", rep.MAC)
	hw, _ := net.ParseMAC(rep.MAC)
	if s.cfg.Planner != nil && !s.cfg.Planner.Serves(hw) {
		s.reports.WithLabelValues("unknown_node").Inc()
		log.Debug("report dropped: not a node bootd boots")
		http.Error(w, "unknown node", http.StatusForbidden)
		return
	}
	// An address bootd knows as one node speaking for another is lying.
	if mac, ok := s.cfg.Log.MACOf(ip.String()); ok && mac != rep.MAC {
		s.reports.WithLabelValues("forged").Inc()
		log.Warn("report dropped: the address belongs to another node", "node_mac", mac)
		http.Error(w, "this address is another node's", http.StatusForbidden)
		return
	}
	s.reports.WithLabelValues("accepted").Inc()
	s.cfg.Log.Record(events.Event{MAC: rep.MAC, IP: ip.String(), Stage: rep.Stage, Image: rep.Image,
		Generation: rep.Generation, Hostname: rep.Hostname, Detail: "report: " + rep.Detail})
	log.Info("node reported", "stage", string(rep.Stage))
	w.WriteHeader(http.StatusNoContent)
}

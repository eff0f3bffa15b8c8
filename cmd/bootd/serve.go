package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/dhcp"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/liveness"
	"github.com/bootd/bootd/lograte"
	"github.com/bootd/bootd/nfs"
	"github.com/bootd/bootd/store"
	"github.com/bootd/bootd/syslog"
	"github.com/bootd/bootd/tftp"
	"github.com/bootd/bootd/web"
)

func newServeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "serve images to the cluster: DHCP, TFTP, HTTP, NFS and syslog as configured",
		Long: `Serve the image store to the cluster until interrupted (SIGINT, SIGTERM):
proxy or full DHCP, TFTP, HTTP boot and the status API, the read-only NFS
root, syslog and netconsole, each as the config file says. Under systemd,
log lines carry the journal's priority and no time of their own.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			twoPsOnOneCPU()
			cfg, err := a.config()
			if err != nil {
				return err
			}
			return serve(context.Background(), cfg, a.log, a.logs)
		},
	}
}

// serve runs every service the config turns on until ctx ends or a signal
// stops it; logs is the handler under log, whose suppressed lines are a
// metric.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, logs *lograte.Handler) error {
	// SIGHUP (`systemctl reload`, a closed terminal) reloads the config;
	// caught from here on, since its default action ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// A valid file may still lack what serving needs (a fresh install's
	// config has no interface or nfs.allow yet): say all of it at once.
	if err := cfg.CheckServe(); err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := newServices(cfg, log, logs)
	if err != nil {
		return err
	}
	// A service that cannot go on (a port it cannot bind) stops the others
	// and bootd exits with its error, for systemd to restart it. Passing
	// trouble (out of descriptors, a client that misbehaves) each service
	// rides out on its own.
	g, gctx := errgroup.WithContext(ctx)
	for _, start := range []func(context.Context, *errgroup.Group) (func(), error){
		s.startNFS, s.startTFTP, s.startSyslog, s.startDHCP, s.startHTTP, s.startConsole, s.startLiveness,
	} {
		done, err := start(gctx, g)
		if err != nil {
			stop()
			g.Wait()
			return err
		}
		defer done()
	}
	g.Go(func() error { keepRecords(gctx, s.evs, s.recordsPath, log); return nil })
	g.Go(func() error { s.stats.run(gctx, log); return nil })
	g.Go(func() error { s.state.reloadOnHUP(gctx, hup); return nil })
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("bootd stopped")
	return nil
}

// services is what serve's services share: the boot plan, the node
// records, the metrics registry and the state the status API shows.
type services struct {
	cfg         *config.Config
	log         *slog.Logger
	st          *store.Store
	planner     *boot.Planner
	serverIP    netip.Addr
	reg         *prometheus.Registry
	state       *serveState
	evs         *events.Log
	recordsPath string
	neighbors   *neighborNodes
	stats       statsWriter
}

// newServices builds what the services share and runs the start checks
// (state.startup), before anything listens.
func newServices(cfg *config.Config, log *slog.Logger, logs *lograte.Handler) (*services, error) {
	s := &services{cfg: cfg, log: log, st: store.New(cfg.StateDir), reg: newRegistry()}
	var err error
	if s.planner, s.serverIP, err = newPlanner(cfg, s.st); err != nil {
		return nil, err
	}
	s.state = newServeState(cfg, s.planner, s.serverIP, log, s.reg)
	if err := s.state.startup(); err != nil {
		return nil, err
	}
	s.evs = events.NewWithLimits(4096, events.Limits{Nodes: cfg.Status.MaxNodes, Lines: cfg.Status.LogLines,
		LineBytes: cfg.Status.LogKiB << 10, LostAfter: cfg.Status.LostAfterDuration()})
	s.recordsPath = filepath.Join(cfg.StateDir, "run", "nodes.json")
	if err := s.evs.Load(s.recordsPath); err != nil {
		log.Warn("node records", "err", err)
	}
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bootd_log_lines_suppressed_total",
		Help: "Log lines naming a client that were held back: the client, or all clients together, logged faster than bootd writes."},
		func() float64 { return float64(logs.Dropped()) }))
	// A reload may drop nodes: forget which addresses were theirs.
	s.neighbors = newNeighborNodes(cfg.Interface, s.planner.Node)
	s.state.onReload = s.neighbors.forget
	s.stats.path = filepath.Join(cfg.StateDir, "run", "stats.json")
	return s, nil
}

func nothing() {}

// Each service below starts its goroutines in g when the config turns it
// on, and returns what to undo when serve ends.

func (s *services) startNFS(ctx context.Context, g *errgroup.Group) (func(), error) {
	cfg := s.cfg
	if cfg.NFS.Listen == "" {
		return nothing, nil
	}
	rec, closeRec, err := nfsRecorder(cfg.NFS.Record)
	if err != nil {
		return nil, err
	}
	srv := nfs.New(nfs.Config{
		Store:             s.st,
		Allow:             cfg.NFS.AllowPrefixes(),
		SecurePorts:       cfg.NFS.SecurePorts,
		MaxConns:          cfg.NFS.MaxConnections,
		MaxConnsPerClient: cfg.NFS.MaxConnectionsPerClient,
		Logger:            s.log,
		Metrics:           nfs.NewMetrics(s.reg),
		Squash:            squashUnknown(cfg, s.planner, s.neighbors, s.evs),
		Record:            rec,
		OnMount: func(client netip.AddrPort, image string, gen int) {
			s.evs.Record(events.Event{IP: client.Addr().String(), Stage: events.StageMount, Image: image, Generation: gen, Detail: fmt.Sprintf("nfs mount %s/%d", image, gen)})
		},
	})
	g.Go(func() error { srv.Preload(); return nil })
	g.Go(func() error { return srv.ListenAndServe(ctx, cfg.NFS.Listen) })
	s.stats.nfs = srv
	return closeRec, nil
}

func (s *services) startTFTP(ctx context.Context, g *errgroup.Group) (func(), error) {
	cfg := s.cfg
	if cfg.TFTP.Listen == "" {
		return nothing, nil
	}
	srv := tftp.New(tftp.Config{Planner: s.planner, Events: s.evs, Logger: s.log,
		Metrics:  tftp.NewMetrics(s.reg),
		BusyPoll: cfg.TFTP.BusyPollDuration(),
		Limits: tftp.Limits{Transfers: cfg.TFTP.MaxTransfers, PerClient: cfg.TFTP.MaxTransfersPerClient,
			Rate: cfg.TFTP.RequestsPerSecond}})
	g.Go(func() error { return srv.ListenAndServe(ctx, cfg.TFTP.Listen) })
	s.stats.tftp = srv
	return nothing, nil
}

func (s *services) startSyslog(ctx context.Context, g *errgroup.Group) (func(), error) {
	cfg := s.cfg
	if cfg.Syslog.Listen == "" {
		return nothing, nil
	}
	srv := syslog.New(syslog.Config{Dir: filepath.Join(cfg.StateDir, "logs"), Allow: cfg.Syslog.AllowPrefixes(), Logger: s.log,
		Limits: syslog.Limits{MaxFileSize: cfg.Syslog.MaxFileSize()}, Metrics: syslog.NewMetrics(s.reg),
		OnLine: func(src netip.Addr, line string) { s.evs.Syslog(src.String(), line, time.Time{}) }})
	g.Go(func() error { return srv.ListenAndServe(ctx, cfg.Syslog.Listen) })
	s.stats.syslog = srv
	return nothing, nil
}

func (s *services) startDHCP(ctx context.Context, g *errgroup.Group) (func(), error) {
	cfg := s.cfg
	if cfg.DHCP.Mode == "off" {
		return nothing, nil
	}
	if cfg.DHCP.IPv6RA {
		g.Go(func() error { return dhcp.ServeRouterAdvertisements(ctx, cfg.Interface, s.log) })
	}
	dcfg := dhcp.Config{Interface: cfg.Interface, ServerIP: s.serverIP, Planner: s.planner, Events: s.evs, Logger: s.log,
		Relays: cfg.DHCP.RelayAddrs(), Metrics: dhcp.NewMetrics(s.reg)}
	if cfg.DHCP.Mode == "proxy" {
		srv := dhcp.NewProxy(dcfg)
		g.Go(func() error { return srv.Serve(ctx) })
		return nothing, nil
	}
	fc := cfg.DHCP.Full()
	srv, err := dhcp.NewFull(dhcp.FullConfig{
		Config: dcfg,
		Network: dhcp.Network{Subnet: fc.Subnet, Router: fc.Router, DNS: fc.DNS, Domain: fc.Domain,
			LeaseTime: fc.LeaseTime, RangeStart: fc.RangeStart, RangeEnd: fc.RangeEnd},
		LeaseFile: filepath.Join(cfg.StateDir, "dhcp", "leases.json"),
	})
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return srv.Serve(ctx) })
	return nothing, nil
}

func (s *services) startHTTP(ctx context.Context, g *errgroup.Group) (func(), error) {
	if s.cfg.HTTP.Listen == "" {
		return nothing, nil
	}
	srv := web.New(web.Config{Log: s.evs, Planner: s.planner, Allow: s.cfg.HTTP.AllowPrefixes(), Registry: s.reg, Logger: s.log,
		Status: func() any { return s.state.status() }})
	g.Go(func() error { return srv.ListenAndServe(ctx, s.cfg.HTTP.Listen) })
	return nothing, nil
}

func (s *services) startConsole(ctx context.Context, g *errgroup.Group) (func(), error) {
	if s.cfg.Console.Listen == "" {
		return nothing, nil
	}
	srv := syslog.NewNetconsole(syslog.NetconsoleConfig{Allow: s.cfg.HTTP.AllowPrefixes(), Logger: s.log,
		Sink: func(src netip.Addr, text string, t time.Time) bool { return s.evs.Console(src.String(), text, t) }})
	g.Go(func() error { return srv.ListenAndServe(ctx, s.cfg.Console.Listen) })
	return nothing, nil
}

// startLiveness probes up nodes gone quiet, so a dead node shows as lost.
func (s *services) startLiveness(ctx context.Context, g *errgroup.Group) (func(), error) {
	every := s.cfg.Status.ProbeEveryDuration()
	if every <= 0 {
		return nothing, nil
	}
	p := liveness.New(liveness.Config{Interval: every, Logger: s.log, Alive: s.evs.Alive, Lost: s.evs.Lose,
		Quiet: func(since time.Time) []liveness.Target {
			var out []liveness.Target
			for _, n := range s.evs.Quiet(since) {
				if a, err := netip.ParseAddr(n.IP); err == nil {
					out = append(out, liveness.Target{MAC: n.MAC, IP: a})
				}
			}
			return out
		}})
	g.Go(func() error { return p.Run(ctx) })
	return nothing, nil
}

// squashUnknown is the NFS root squash for clients that are not nodes:
// not a fixed address of the node table, no node's record is at that
// address (records survive restarts, so running nodes keep root), and the
// kernel's ARP table does not give it a node's Ethernet address (nodes
// that booted from another master, whose records are there). The table
// is the planner's at each call: a reload changes it.
func squashUnknown(cfg *config.Config, planner *boot.Planner, neighbors *neighborNodes, evs *events.Log) func(netip.Addr) bool {
	if !cfg.NFS.SquashUnknown {
		return nil
	}
	return func(a netip.Addr) bool {
		if _, fixed := planner.NodeAt(a); fixed {
			return false
		}
		if _, known := evs.MACOf(a.String()); known {
			return false
		}
		return !neighbors.isNode(a)
	}
}

// nfsRecorder writes nfs.record: each call a JSON line, at most
// maxRecorded of them.
func nfsRecorder(path string) (func(nfs.Op), func(), error) {
	if path == "" {
		return nil, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("nfs.record: %w", err)
	}
	const maxRecorded = 1_000_000
	var (
		mu sync.Mutex
		n  int
	)
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	rec := func(op nfs.Op) {
		mu.Lock()
		defer mu.Unlock()
		if n < maxRecorded {
			n++
			enc.Encode(op)
		}
	}
	return rec, func() { mu.Lock(); w.Flush(); f.Close(); mu.Unlock() }, nil
}

// keepRecords marks stalled boots lost and saves the node records every
// few seconds, and once more when serve stops.
func keepRecords(ctx context.Context, evs *events.Log, path string, log *slog.Logger) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := evs.Save(path); err != nil {
				log.Error("node records", "err", err)
			}
			return
		case <-t.C:
			evs.Sweep()
			if err := evs.Save(path); err != nil {
				log.Warn("node records", "err", err)
			}
		}
	}
}

// newRegistry is the metrics registry every service registers in: Go
// runtime, process and build facts first.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	return reg
}

// newPlanner builds the boot plan and finds the address nodes reach bootd
// at: the config's address (a VIP that keepalived moves between masters)
// or else its address on the cluster interface.
func newPlanner(cfg *config.Config, st *store.Store) (*boot.Planner, netip.Addr, error) {
	o := boot.Options{
		Nodes:       cfg.Table(),
		Defaults:    cfg.Defaults,
		BootUnknown: cfg.UnknownNodes == "boot",
		Store:       st,
		Loaders:     cfg.TFTP.Loaders,
		IPXE:        cfg.HTTP.BootMode(),
	}
	ip := cfg.ServiceAddr()
	needIface := cfg.DHCP.Mode != "off" || (cfg.TFTP.Listen != "" && !ip.IsValid())
	if !needIface && !ip.IsValid() {
		return boot.NewPlanner(o), netip.Addr{}, nil
	}
	if needIface && cfg.Interface == "" {
		return nil, netip.Addr{}, fmt.Errorf("%s: interface: name the cluster NIC (DHCP and TFTP are on); or set dhcp.mode: off and tftp.listen: \"\"", cfg.Path)
	}
	if !ip.IsValid() {
		var err error
		if ip, err = dhcp.InterfaceAddr(cfg.Interface); err != nil {
			return nil, netip.Addr{}, fmt.Errorf("%s: interface: %w", cfg.Path, err)
		}
	}
	// Where nodes reach each service: a wildcard listen address means the
	// service address (address:, or the interface's); a wildcard listener
	// takes traffic to a VIP whenever this master holds it. The boot plan
	// puts each on the command line; one that is off is left out, and
	// nodes then send it nothing.
	reach := func(listen string) netip.AddrPort {
		if listen == "" {
			return netip.AddrPort{}
		}
		ap := netip.MustParseAddrPort(listen)
		addr := ap.Addr()
		if addr.IsUnspecified() {
			addr = ip
		}
		return netip.AddrPortFrom(addr, ap.Port())
	}
	o.NFS = reach(cfg.NFS.Listen)
	o.HTTP = reach(cfg.HTTP.Listen)
	o.Console = reach(cfg.Console.Listen)
	o.Log = reach(cfg.Syslog.Listen)
	return boot.NewPlanner(o), ip, nil
}

// twoPsOnOneCPU gives the Go scheduler a second P when bootd may use only
// one CPU (unless GOMAXPROCS is set). With one P, each packet that arrives
// while the only thread sleeps in the netpoller waits for that thread to be
// woken; with two, one thread can look for work while the other sleeps.
// Both still share the one CPU. Measured with bench/tftp.sh's storm (bootd
// confined to one CPU, 32 clients): 13% more throughput.
func twoPsOnOneCPU() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.NumCPU() == 1 && runtime.GOMAXPROCS(0) == 1 {
		runtime.GOMAXPROCS(2)
	}
}

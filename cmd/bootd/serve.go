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
	st := store.New(cfg.StateDir)
	planner, serverIP, err := newPlanner(cfg, st)
	if err != nil {
		return err
	}
	reg := newRegistry()
	state := newServeState(cfg, planner, serverIP, log, reg)
	if err := state.startup(); err != nil {
		return err
	}
	evs := events.NewWithLimits(4096, events.Limits{Nodes: cfg.Status.MaxNodes, Lines: cfg.Status.LogLines,
		LineBytes: cfg.Status.LogKiB << 10, LostAfter: cfg.Status.LostAfterDuration()})
	recordsPath := filepath.Join(cfg.StateDir, "run", "nodes.json")
	if err := evs.Load(recordsPath); err != nil {
		log.Warn("node records", "err", err)
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bootd_log_lines_suppressed_total",
		Help: "Log lines naming a client that were held back: the client, or all clients together, logged faster than bootd writes."},
		func() float64 { return float64(logs.Dropped()) }))

	// A service that cannot go on (a port it cannot bind) stops the others
	// and bootd exits with its error, for systemd to restart it. Passing
	// trouble (out of descriptors, a client that misbehaves) each service
	// rides out on its own.
	g, gctx := errgroup.WithContext(ctx)
	// A reload may drop nodes: forget which addresses were theirs.
	neighbors := newNeighborNodes(cfg.Interface, planner.Node)
	state.onReload = neighbors.forget
	var stats statsWriter
	stats.path = filepath.Join(cfg.StateDir, "run", "stats.json")
	if cfg.NFS.Listen != "" {
		rec, closeRec, err := nfsRecorder(cfg.NFS.Record)
		if err != nil {
			return err
		}
		defer closeRec()
		srv := nfs.New(nfs.Config{
			Store:             st,
			Allow:             cfg.NFS.AllowPrefixes(),
			SecurePorts:       cfg.NFS.SecurePorts,
			MaxConns:          cfg.NFS.MaxConnections,
			MaxConnsPerClient: cfg.NFS.MaxConnectionsPerClient,
			Logger:            log,
			Metrics:           nfs.NewMetrics(reg),
			Squash:            squashUnknown(cfg, planner, neighbors, evs),
			Record:            rec,
			OnMount: func(client netip.AddrPort, image string, gen int) {
				evs.Record(events.Event{IP: client.Addr().String(), Stage: events.StageMount, Image: image, Generation: gen, Detail: fmt.Sprintf("nfs mount %s/%d", image, gen)})
			},
		})
		g.Go(func() error { srv.Preload(); return nil })
		g.Go(func() error { return srv.ListenAndServe(gctx, cfg.NFS.Listen) })
		stats.nfs = srv
	}
	if cfg.TFTP.Listen != "" {
		srv := tftp.New(tftp.Config{Planner: planner, Events: evs, Logger: log,
			Metrics:  tftp.NewMetrics(reg),
			BusyPoll: cfg.TFTP.BusyPollDuration(),
			Limits: tftp.Limits{Transfers: cfg.TFTP.MaxTransfers, PerClient: cfg.TFTP.MaxTransfersPerClient,
				Rate: cfg.TFTP.RequestsPerSecond}})
		g.Go(func() error { return srv.ListenAndServe(gctx, cfg.TFTP.Listen) })
		stats.tftp = srv
	}
	if cfg.Syslog.Listen != "" {
		srv := syslog.New(syslog.Config{Dir: filepath.Join(cfg.StateDir, "logs"), Allow: cfg.Syslog.AllowPrefixes(), Logger: log,
			Limits: syslog.Limits{MaxFileSize: cfg.Syslog.MaxFileSize()}, Metrics: syslog.NewMetrics(reg),
			OnLine: func(src netip.Addr, line string) { evs.Syslog(src.String(), line, time.Time{}) }})
		g.Go(func() error { return srv.ListenAndServe(gctx, cfg.Syslog.Listen) })
		stats.syslog = srv
	}
	if cfg.DHCP.IPv6RA && cfg.DHCP.Mode != "off" {
		g.Go(func() error { return dhcp.ServeRouterAdvertisements(gctx, cfg.Interface, log) })
	}
	dcfg := dhcp.Config{Interface: cfg.Interface, ServerIP: serverIP, Planner: planner, Events: evs, Logger: log,
		Relays: cfg.DHCP.RelayAddrs()}
	if cfg.DHCP.Mode != "off" {
		dcfg.Metrics = dhcp.NewMetrics(reg)
	}
	switch cfg.DHCP.Mode {
	case "proxy":
		srv := dhcp.NewProxy(dcfg)
		g.Go(func() error { return srv.Serve(gctx) })
	case "full":
		fc := cfg.DHCP.Full()
		srv, err := dhcp.NewFull(dhcp.FullConfig{
			Config: dcfg,
			Network: dhcp.Network{Subnet: fc.Subnet, Router: fc.Router, DNS: fc.DNS, Domain: fc.Domain,
				LeaseTime: fc.LeaseTime, RangeStart: fc.RangeStart, RangeEnd: fc.RangeEnd},
			LeaseFile: filepath.Join(cfg.StateDir, "dhcp", "leases.json"),
		})
		if err != nil {
			stop()
			g.Wait()
			return err
		}
		g.Go(func() error { return srv.Serve(gctx) })
	}
	if cfg.HTTP.Listen != "" {
		srv := web.New(web.Config{Log: evs, Planner: planner, Allow: cfg.HTTP.AllowPrefixes(), Registry: reg, Logger: log,
			Status: func() any { return state.status() }})
		g.Go(func() error { return srv.ListenAndServe(gctx, cfg.HTTP.Listen) })
	}
	if cfg.Console.Listen != "" {
		srv := syslog.NewNetconsole(syslog.NetconsoleConfig{Allow: cfg.HTTP.AllowPrefixes(), Logger: log,
			Sink: func(src netip.Addr, text string, t time.Time) bool { return evs.Console(src.String(), text, t) }})
		g.Go(func() error { return srv.ListenAndServe(gctx, cfg.Console.Listen) })
	}
	if every := cfg.Status.ProbeEveryDuration(); every > 0 {
		p := liveness.New(liveness.Config{Interval: every, Logger: log, Alive: evs.Alive, Lost: evs.Lose,
			Quiet: func(since time.Time) []liveness.Target {
				var out []liveness.Target
				for _, n := range evs.Quiet(since) {
					if a, err := netip.ParseAddr(n.IP); err == nil {
						out = append(out, liveness.Target{MAC: n.MAC, IP: a})
					}
				}
				return out
			}})
		g.Go(func() error { return p.Run(gctx) })
	}
	g.Go(func() error { keepRecords(gctx, evs, recordsPath, log); return nil })
	g.Go(func() error { stats.run(gctx, log); return nil })
	g.Go(func() error { state.reloadOnHUP(gctx, hup); return nil })
	err = g.Wait()
	if err != nil {
		return err
	}
	log.Info("bootd stopped")
	return nil
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

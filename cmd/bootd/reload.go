package main

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/config"
)

// Keys a reload applies while bootd serves: they only change the answers
// of the boot plan, which the planner swaps at once (boot.Planner.Update)
// while transfers, downloads and NFS clients go on.
var liveKeys = []string{"nodes", "defaults", "unknown_nodes", "tftp.loaders", "http.boot"}

// Keys serve does not read: `bootd image build/update` and `bootd initrd
// build` read them from the file each time they run.
var buildKeys = []string{"image", "initrd"}

// Every other key (addresses, interface, state_dir, DHCP mode and
// network, limits, allow lists) is bound into a listener or a service at
// start, and needs a restart.
func needsRestart(key string) bool { return !underAny(key, liveKeys) && !underAny(key, buildKeys) }

func underAny(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if key == p || strings.HasPrefix(key, p+".") {
			return true
		}
	}
	return false
}

// changedKeys names the config keys whose values differ between a and b
// (nfs.listen, dhcp.mode, nodes, ...), by the yaml names of Config's
// fields: a key added to Config later is covered, and needs a restart
// until it is listed in liveKeys.
func changedKeys(a, b *config.Config) []string {
	var out []string
	var walk func(va, vb reflect.Value, prefix string)
	walk = func(va, vb reflect.Value, prefix string) {
		t := va.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() || name == "-" || (name == "" && opts != "inline") {
				continue
			}
			key := prefix
			if name != "" {
				key = strings.TrimPrefix(prefix+"."+name, ".")
			}
			fa, fb := va.Field(i), vb.Field(i)
			if f.Type.Kind() == reflect.Struct && (prefix == "" || name == "") {
				walk(fa, fb, key) // one level deep: nfs.listen, dhcp.mode
				continue
			}
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				out = append(out, key)
			}
		}
	}
	walk(reflect.ValueOf(*a), reflect.ValueOf(*b), "")
	sort.Strings(out)
	return out
}

// reloadState is the last reload, as the status API shows it.
type reloadState struct {
	OK     int       `json:"ok"`
	Failed int       `json:"failed"`
	Last   time.Time `json:"last,omitzero"`
	// Error is why the last reload failed; "" when it succeeded.
	Error string `json:"error,omitempty"`
	// Applied lists the keys the last good reload changed live;
	// NeedsRestart the keys whose values in the file differ from those
	// bootd started with, which it goes on using until a restart.
	Applied      []string `json:"applied,omitempty"`
	NeedsRestart []string `json:"needs_restart,omitempty"`
}

// serveState is what a running serve knows about itself: the config it
// started with, the one whose live keys are in effect, its boot plan,
// and its reloads. The status API, the start summary and SIGHUP use it.
type serveState struct {
	started   *config.Config // what listeners and services were made from
	applied   atomic.Pointer[config.Config]
	planner   *boot.Planner
	addr      netip.Addr // where nodes reach this master
	version   string
	startedAt time.Time
	check     checkInput
	log       *slog.Logger
	reloads   *prometheus.CounterVec
	// onReload runs after a good reload has been applied (e.g. to forget
	// answers cached from the old table).
	onReload func()

	mu   sync.Mutex // one reload at a time; guards last
	last reloadState
}

func newServeState(cfg *config.Config, planner *boot.Planner, addr netip.Addr, log *slog.Logger, reg prometheus.Registerer) *serveState {
	s := &serveState{started: cfg, planner: planner, addr: addr, version: strings.TrimPrefix(versionString(), "bootd "), startedAt: time.Now(), log: log,
		check: checkInput{StateDir: cfg.StateDir, Planner: planner, Writes: []string{"run"}, Loaders: cfg.TFTP.Listen != ""},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bootd_config_reloads_total",
			Help: "Config reloads (SIGHUP), by result: ok (applied), failed (invalid file; the config before stays)."}, []string{"result"})}
	if cfg.Syslog.Listen != "" {
		s.check.Writes = append(s.check.Writes, "logs")
	}
	if cfg.DHCP.Mode == "full" {
		s.check.Writes = append(s.check.Writes, "dhcp")
	}
	s.applied.Store(cfg)
	for _, r := range []string{"ok", "failed"} {
		s.reloads.WithLabelValues(r)
	}
	reg.MustRegister(s.reloads)
	return s
}

// reloadOnHUP reloads the config at each signal on hup until ctx ends.
func (s *serveState) reloadOnHUP(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			s.reload()
		}
	}
}

// reload reads the config file again. An invalid file changes nothing:
// bootd goes on with the config it has. A valid one has its live keys
// applied at once; keys that need a restart are logged and left as they
// were.
func (s *serveState) reload() reloadState {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last.Last = time.Now().UTC()
	cfg, err := config.Load(s.started.Path)
	if err == nil {
		err = cfg.CheckServe()
	}
	if err != nil {
		s.reloads.WithLabelValues("failed").Inc()
		s.last.Failed++
		s.last.Error = err.Error()
		s.log.Error("config reload failed; serving on with the config before", "err", err)
		return s.last
	}
	prev := s.applied.Load()
	o := s.planner.Options()
	o.Nodes, o.Defaults, o.BootUnknown = cfg.Table(), cfg.Defaults, cfg.UnknownNodes == "boot"
	o.Loaders, o.IPXE = cfg.TFTP.Loaders, cfg.HTTP.BootMode()
	s.planner.Update(o)
	s.applied.Store(cfg)
	if s.onReload != nil {
		s.onReload()
	}
	s.reloads.WithLabelValues("ok").Inc()
	s.last.OK++
	s.last.Error = ""
	s.last.Applied, s.last.NeedsRestart = nil, nil
	for _, k := range changedKeys(prev, cfg) {
		if underAny(k, liveKeys) {
			s.last.Applied = append(s.last.Applied, k)
		}
	}
	for _, k := range changedKeys(s.started, cfg) {
		if needsRestart(k) {
			s.last.NeedsRestart = append(s.last.NeedsRestart, k)
		}
	}
	s.log.Info("config reloaded", "config", cfg.Path, "applied", strings.Join(s.last.Applied, ","),
		"nodes", len(cfg.Table().All()), "unknown_nodes", cfg.UnknownNodes)
	for _, k := range s.last.NeedsRestart {
		s.log.Warn("config key changed but needs a restart; still using the value bootd started with", "key", k)
	}
	s.warn(checkServe(s.check).Problems)
	return s.last
}

// warn logs each problem once, at WARN (ERROR when fatal).
func (s *serveState) warn(ps []problem) {
	for _, p := range ps {
		lvl := slog.LevelWarn
		if p.Fatal {
			lvl = slog.LevelError
		}
		s.log.Log(context.Background(), lvl, p.Message, "key", p.Key)
	}
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/image"
	"github.com/bootd/bootd/store"
)

// problem is one thing that keeps nodes from booting, found by
// checkServe at start, at each reload and at each status request.
type problem struct {
	// Fatal problems stop serve from starting: nothing an admin runs while
	// it serves would fix them. The others are warnings.
	Fatal bool `json:"fatal"`
	// Key is the config key the problem is about (state_dir,
	// tftp.loaders.pxelinux.0, defaults.image, nodes[2].image) or, for
	// the image store, images/NAME.
	Key     string `json:"key"`
	Message string `json:"message"`
}

func (p problem) String() string { return p.Key + ": " + p.Message }

// imageState is what one image boots now.
type imageState struct {
	Name string `json:"name"`
	// Current is the generation new boots get; 0 when there is none.
	Current int `json:"current,omitempty"`
	// Kernel is the current generation's kernel version, from its
	// image.json.
	Kernel    string `json:"kernel,omitempty"`
	HasKernel bool   `json:"has_kernel"`
	HasInitrd bool   `json:"has_initrd"`
	// Nodes counts the nodes of the table that boot it; Default says
	// machines without an image of their own boot it (defaults.image).
	Nodes   int  `json:"nodes"`
	Default bool `json:"default,omitempty"`
}

// checkResult is checkServe's answer.
type checkResult struct {
	Problems []problem    `json:"problems"`
	Images   []imageState `json:"images"`
}

// fatal returns the problems that stop serve.
func (r checkResult) fatal() []problem {
	var out []problem
	for _, p := range r.Problems {
		if p.Fatal {
			out = append(out, p)
		}
	}
	return out
}

// checkInput is what checkServe looks at: the state directory, the boot
// plan in effect (node table, defaults, loaders, store) and what serve
// writes and serves.
type checkInput struct {
	StateDir string
	Planner  *boot.Planner
	// Writes are the directories under StateDir that serve writes to
	// (run for the node records, logs with syslog on, dhcp in full mode).
	Writes []string
	// Loaders: bootd serves the first-stage loaders (TFTP is on), so the
	// ones the plan hands out must be on this host.
	Loaders bool
}

// checkServe finds what keeps nodes from booting, before any of them
// tries: each of these would otherwise show up only as a WARN per failed
// node, minutes later.
//
// Which are fatal: state_dir not being a writable directory (or a
// directory serve writes to under it being no writable directory) is
// fatal, because serve keeps its node records, leases and logs there and
// exports the image store from it: it is a typo or a mount missing, and
// nothing run while bootd serves fixes it. Everything else is a warning,
// because it can be fixed while bootd serves and bootd picks the fix up
// without a restart: an image without a current generation or boot files
// (`bootd image build`, `bootd initrd build`: the store is read at every
// request), a loader file missing (`apt-get install`: loaders are opened
// at every transfer, and a missing UEFI loader does not stop BIOS nodes),
// a node without an image (an edit and a reload). A fresh install must
// also be able to start bootd before its first image build.
func checkServe(in checkInput) checkResult {
	var r checkResult
	add := func(fatal bool, key, format string, args ...any) {
		r.Problems = append(r.Problems, problem{Fatal: fatal, Key: key, Message: fmt.Sprintf(format, args...)})
	}
	if msg := writableDir(in.StateDir); msg != "" {
		add(true, "state_dir", "%s %s", in.StateDir, msg)
	} else {
		for _, d := range in.Writes {
			dir := filepath.Join(in.StateDir, d)
			if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
				continue // serve makes it
			}
			if msg := writableDir(dir); msg != "" {
				add(true, "state_dir", "%s %s; serve writes there", dir, msg)
			}
		}
	}
	o := in.Planner.Options()
	r.Images = imagesOf(in.Planner, add)
	for i := range r.Images {
		checkImage(o.Store, &r.Images[i], add)
	}
	if in.Loaders {
		for _, name := range in.Planner.LoadersServed() {
			path := o.Loaders[name]
			if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
				add(false, "tftp.loaders."+name, "%s is not there: firmware sent to %s cannot boot (apt-get install %s, or set tftp.loaders.%s)",
					path, name, loaderPackage[name], name)
			}
		}
	}
	// Fatal first, then by key: the summary and the API list them the
	// same way every time.
	sort.SliceStable(r.Problems, func(i, j int) bool {
		a, b := r.Problems[i], r.Problems[j]
		if a.Fatal != b.Fatal {
			return a.Fatal
		}
		return a.Key < b.Key
	})
	return r
}

// loaderPackage names the Debian package that installs each loader where
// config.DefaultLoaders expects it.
var loaderPackage = map[string]string{
	"pxelinux.0":   "pxelinux",
	"ldlinux.c32":  "syslinux-common",
	"syslinux.efi": "syslinux-efi",
	"ldlinux.e64":  "syslinux-efi",
	boot.ChainBIOS: "ipxe",
	boot.ChainEFI:  "ipxe",
}

// writableDir says what is wrong with dir as a directory serve writes
// to; "" if nothing. access(2) also refuses a read-only file system,
// which root's permissions do not.
func writableDir(dir string) string {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist (create it, or fix state_dir)"
	case err != nil:
		return fmt.Sprintf("cannot be read: %v", err)
	case !st.IsDir():
		return "is not a directory"
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Sprintf("is not writable: %v", err)
	}
	return ""
}

// imagesOf lists the images the node table and the defaults boot, each
// with the number of nodes booting it, then the store's other images;
// nodes and defaults that name no image are problems.
func imagesOf(p *boot.Planner, add func(fatal bool, key, format string, args ...any)) []imageState {
	o := p.Options()
	byName := map[string]*imageState{}
	use := func(name string) *imageState {
		if byName[name] == nil {
			byName[name] = &imageState{Name: name}
		}
		return byName[name]
	}
	for i, n := range o.Nodes.All() {
		name := n.Image
		if name == "" {
			name = o.Defaults.Image
		}
		if name == "" {
			add(false, fmt.Sprintf("nodes[%d].image", i), "node %s has no image and defaults.image is not set: it gets no boot plan", n.MAC)
			continue
		}
		use(name).Nodes++
	}
	if o.Defaults.Image != "" {
		use(o.Defaults.Image).Default = true
	} else if o.BootUnknown {
		add(false, "defaults.image", "not set while unknown_nodes is boot: machines not in the node table get no boot plan")
	}
	if names, err := o.Store.Images(); err == nil {
		for _, n := range names {
			use(n)
		}
	}
	var out []imageState
	for _, s := range byName {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// checkImage fills in what im's current generation boots, and adds a
// problem when an image that nodes boot cannot be booted.
func checkImage(st *store.Store, im *imageState, add func(fatal bool, key, format string, args ...any)) {
	used := im.Nodes > 0 || im.Default
	key := "images/" + im.Name
	gen, err := st.Current(im.Name)
	if err != nil {
		if used {
			add(false, key, "%v: its nodes cannot boot (bootd image build %s)", err, im.Name)
		}
		return
	}
	if err := st.Has(im.Name, gen); err != nil {
		if used {
			add(false, key, "current generation: %v: its nodes cannot boot (bootd image publish or rollback)", err)
		}
		return
	}
	im.Current = gen
	if b, err := os.ReadFile(filepath.Join(st.GenDir(im.Name, gen), "image.json")); err == nil {
		var m image.Meta
		if json.Unmarshal(b, &m) == nil {
			im.Kernel = m.Kernel
		}
	}
	im.HasKernel = store.CheckBootFile(st.GenDir(im.Name, gen), "vmlinuz") == nil
	im.HasInitrd = store.CheckBootFile(st.GenDir(im.Name, gen), "initrd.img") == nil
	if used && (!im.HasKernel || !im.HasInitrd) {
		var missing []string
		if !im.HasKernel {
			missing = append(missing, "boot/vmlinuz")
		}
		if !im.HasInitrd {
			missing = append(missing, "boot/initrd.img")
		}
		add(false, key, "generation %d has no %s: its nodes cannot boot (bootd initrd build --image %s)", gen, strings.Join(missing, " or "), im.Name)
	}
}

// listener is one socket serve listens on.
type listener struct {
	Service string `json:"service"`
	Proto   string `json:"proto"`
	Addr    string `json:"addr"`
}

// serveStatus is GET /api/v1/status and the start summary: what this
// bootd is and serves, and what keeps nodes from booting now.
type serveStatus struct {
	Version   string     `json:"version"`
	Config    string     `json:"config"`
	Started   time.Time  `json:"started"`
	Interface string     `json:"interface,omitempty"`
	Address   string     `json:"address,omitempty"` // where nodes reach this master
	DHCP      string     `json:"dhcp"`              // proxy, full or off
	Listeners []listener `json:"listeners"`
	// Nodes counts the node table; UnknownNodes says what machines not in
	// it get (boot or ignore). Both as the last good reload left them.
	Nodes        int          `json:"nodes"`
	UnknownNodes string       `json:"unknown_nodes"`
	Images       []imageState `json:"images"`
	Problems     []problem    `json:"problems"`
	Reload       reloadState  `json:"reload"`
}

// status checks now and says what serve serves.
func (s *serveState) status() serveStatus {
	cfg, applied := s.started, s.applied.Load()
	r := checkServe(s.check)
	st := serveStatus{Version: s.version, Config: cfg.Path, Started: s.startedAt.UTC(), Interface: cfg.Interface,
		DHCP: cfg.DHCP.Mode, Listeners: s.listeners(), Nodes: len(s.planner.Nodes()), UnknownNodes: applied.UnknownNodes,
		Images: r.Images, Problems: r.Problems}
	if s.addr.IsValid() {
		st.Address = s.addr.String()
	}
	if st.Problems == nil {
		st.Problems = []problem{} // [] in the JSON: "no problems", not "unknown"
	}
	s.mu.Lock()
	st.Reload = s.last
	s.mu.Unlock()
	return st
}

// listeners lists the sockets the started config asks for.
func (s *serveState) listeners() []listener {
	cfg := s.started
	var out []listener
	add := func(service, proto, addr string) {
		if addr != "" {
			out = append(out, listener{service, proto, addr})
		}
	}
	if cfg.DHCP.Mode != "off" {
		add("dhcp", "udp", cfg.Interface+":67")
		add("dhcp", "udp", cfg.Interface+":4011")
		if cfg.DHCP.IPv6RA {
			add("ipv6-ra", "icmpv6", cfg.Interface)
		}
	}
	add("tftp", "udp", cfg.TFTP.Listen)
	add("nfs", "tcp", cfg.NFS.Listen)
	add("http", "tcp", cfg.HTTP.Listen)
	add("syslog", "udp+tcp", cfg.Syslog.Listen)
	add("console", "udp", cfg.Console.Listen)
	return out
}

// startup runs the checks before serve listens. It logs a summary of what
// serve is about to serve, one line each, and every problem once; it
// returns an error listing every problem when one is fatal.
func (s *serveState) startup() error {
	st := s.status()
	var fatal int
	for _, p := range st.Problems {
		if p.Fatal {
			fatal++
		}
	}
	if fatal > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "cannot serve: %d of %d problems are fatal:", fatal, len(st.Problems))
		for _, p := range st.Problems {
			tag := "warning"
			if p.Fatal {
				tag = "FATAL"
			}
			fmt.Fprintf(&b, "\n  %-7s %s", tag, p)
		}
		return errors.New(b.String())
	}
	s.log.Info("bootd serve", "version", st.Version, "config", st.Config, "interface", st.Interface, "address", st.Address,
		"dhcp", st.DHCP, "nodes", st.Nodes, "unknown_nodes", st.UnknownNodes)
	for _, l := range st.Listeners {
		s.log.Info("listen", "service", l.Service, "proto", l.Proto, "addr", l.Addr)
	}
	for _, im := range st.Images {
		boots := "nothing: no current generation"
		if im.Current > 0 {
			boots = fmt.Sprintf("generation %d", im.Current)
		}
		s.log.Info("image", "name", im.Name, "boots", boots, "kernel", im.Kernel, "vmlinuz", im.HasKernel, "initrd", im.HasInitrd,
			"nodes", im.Nodes, "default", im.Default)
	}
	s.warn(st.Problems)
	return nil
}

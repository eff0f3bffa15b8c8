package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bootd/bootd/events"
)

// LabPassword is root's password on lab nodes (the lab only: its images are
// built with this hash).
const LabPassword = "bootd"

const labPasswordHash = "$6$bootdlab$N9RWVw5qfXvSWNdbG3va6bKGG42f0lcuhAXWVWPoLbD3A28DDay1z4AWx4uwZ9DWqnpQknju/ZHOKxrM0/9dV1"

// Options configure a lab cluster.
type Options struct {
	Dir      string // everything the lab keeps: state, logs, consoles
	Name     string // namespace prefix
	Nodes    int
	Firmware string // bios, uefi, uefi-native or mixed
	Image    string
	// Suite is the Debian suite of a missing image: trixie or bookworm,
	// or both ("bookworm,trixie"): then nodes take the suites in turn,
	// each booting the image named after its suite.
	Suite string
	// SiteDHCP is the site's DHCP server (default dnsmasq); SiteNone
	// makes bootd the DHCP server (dhcp.mode full).
	SiteDHCP SiteDHCP
	// Specs, when set, are the nodes (their Image a suite's name, or "" for
	// Image) instead of Nodes nodes made from Firmware and Suite; UpCluster
	// powers them all on, StartCluster none.
	Specs   []NodeSpec
	Bootd   string // the bootd binary to run as master (and to build with)
	Out     io.Writer
	Timeout time.Duration // per node, power-on to multi-user
	// LostAfter is bootd's status.lost_after in the lab (default "3m").
	LostAfter string
	// Boot is bootd's http.boot in the lab: chain (bootd's default), ipxe
	// or off.
	Boot string
	// Masters is how many masters serve the cluster: 1 (the default) or
	// 2, which share the service address ServiceIP through keepalived
	// (masters.go).
	Masters int
}

// Stages of a node's boot that the lab follows, in order: bootd's, from
// DHCP to up.
var Stages = []string{"dhcp", "loader", "config", "kernel", "initrd", "root", "up"}

// NodeReport is one node's boot.
type NodeReport struct {
	Node
	Hostname string
	IP       string
	Start    time.Time
	At       map[string]time.Duration // stage -> time since power-on
	Result   string
	// Path is how the node got its kernel: "http" (iPXE script, kernel
	// and initrd over HTTP) or "tftp" (pxelinux/syslinux), from its
	// record's config stage.
	Path string
}

// Cluster is a running lab cluster.
type Cluster struct {
	*Lab
	Opt    Options
	Config string // master 1's bootd.yaml
	// Configs are every master's, Config first.
	Configs []string
	Reports []*NodeReport
}

func (o *Options) defaults() {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Firmware == "" {
		o.Firmware = "mixed"
	}
	if o.Suite == "" {
		o.Suite = "trixie"
	}
	if o.Image == "" {
		o.Image = o.suites()[0]
	}
	if o.Name == "" {
		o.Name = "bootdlab"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.LostAfter == "" {
		o.LostAfter = "3m"
	}
	if o.Boot == "" {
		o.Boot = "chain"
	}
	if o.Timeout == 0 {
		o.Timeout = 6 * time.Minute
	}
	if o.Masters == 0 {
		o.Masters = 1
	}
	if o.SiteDHCP == "" {
		o.SiteDHCP = SiteDnsmasq
	}
	if len(o.Specs) == 0 {
		for i := 1; i <= o.Nodes; i++ {
			o.Specs = append(o.Specs, nodeSpec(*o, i))
		}
	}
	o.Nodes = len(o.Specs)
}

// suites are the suites of Options.Suite.
func (o Options) suites() []string { return strings.Split(o.Suite, ",") }

// images are the images the lab's nodes boot, each with its suite: the
// lab's Image, and the suite-named image of each node that names one.
func (o Options) images() map[string]string {
	m := map[string]string{o.Image: o.suites()[0]}
	for _, s := range o.Specs {
		if s.Image != "" {
			m[s.Image] = s.Image
		}
	}
	return m
}

// stateDir is master i's state_dir (from 1).
func (o Options) stateDir(i int) string {
	if i <= 1 {
		return filepath.Join(o.Dir, "state")
	}
	return filepath.Join(o.Dir, fmt.Sprintf("state%d", i))
}

// configPath is master i's bootd.yaml.
func (o Options) configPath(i int) string {
	if i <= 1 {
		return filepath.Join(o.Dir, "bootd.yaml")
	}
	return filepath.Join(o.Dir, fmt.Sprintf("bootd%d.yaml", i))
}

// NodeName, NodeMAC, firmware, NIC and image of the i-th node (from 1):
// odd nodes are BIOS with e1000, even ones UEFI with virtio-net in a mixed
// lab; with several suites, node i boots suite i modulo their number.
func nodeSpec(o Options, i int) NodeSpec {
	fw := Firmware(o.Firmware)
	if o.Firmware == "mixed" {
		fw = BIOS
		if i%2 == 0 {
			fw = UEFI
		}
	}
	nic := "e1000"
	if i%2 == 0 {
		nic = "virtio-net-pci"
	}
	if fw == UEFINative {
		nic = "virtio-net-pci" // OVMF has no e1000 driver of its own
	}
	var image string
	if s := o.suites(); len(s) > 1 {
		image = s[(i-1)%len(s)]
	}
	return NodeSpec{Name: fmt.Sprintf("node%02d", i), MAC: fmt.Sprintf("52:54:00:bd:00:%02x", i), Firmware: fw, NIC: nic, MemoryMB: 1024, Image: image}
}

// dhcpConfig is bootd's dhcp section: proxy beside a site DHCP server,
// full (the lab's range) without one.
func (o Options) dhcpConfig() string {
	if o.SiteDHCP == SiteNone {
		return fmt.Sprintf("{mode: full, ipv6_ra: true, subnet: %s%s, range: [%s, %s], lease_time: 1h}", Subnet, Prefix, RangeLow, RangeHigh)
	}
	return "{mode: proxy, ipv6_ra: true}"
}

// config is master i's bootd.yaml. The nodes' kernels skip their check of
// the 8254 timer (no_timer_check, as Debian's cloud images do for VMs):
// under TCG on a loaded machine it fails now and then and the kernel
// panics ("IO-APIC + timer doesn't work!", seen in a matrix run with five
// compilers beside it), an emulator's flake and not a boot path's.
// One master listens on its own address;
// with several, every master listens on all its addresses and sends nodes
// to the service address, which only the one keepalived made active holds.
func (o Options) config(i int) string {
	listen, address := MasterIP, ""
	if o.Masters > 1 {
		listen, address = "0.0.0.0", "address: "+ServiceIP+"\n"
	}
	var nodes strings.Builder
	for _, s := range o.Specs {
		image := ""
		if s.Image != "" {
			image = ", image: " + s.Image
		}
		fmt.Fprintf(&nodes, "  - {mac: %q, hostname: %s%s}\n", s.MAC, s.Name, image)
	}
	return fmt.Sprintf(`# Generated by bootd lab.
state_dir: %s
interface: %s
%sdhcp: %s
tftp: {listen: "0.0.0.0:69"}
nfs: {listen: "%s:2049", allow: ["10.213.0.0/24"]}
syslog: {listen: "%s:514", allow: ["10.213.0.0/24"]}
http: {listen: "%s:%d", boot: %s}
console: {listen: "%s:6666"}
status: {lost_after: %s, probe_every: 5s}
defaults: {image: %s, console: "ttyS0,115200n8", append: "quiet no_timer_check"}
unknown_nodes: ignore
image:
  root_password_hash: %q
nodes:
%s`, o.stateDir(i), MasterIf, address, o.dhcpConfig(), listen, listen, listen, APIPort, o.Boot, listen, o.LostAfter, o.Image, labPasswordHash, nodes.String())
}

// writeConfigs writes every master's bootd.yaml.
func (o Options) writeConfigs() error {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	for i := o.Masters; i >= 1; i-- {
		if err := os.WriteFile(o.configPath(i), []byte(o.config(i)), 0o644); err != nil {
			return fmt.Errorf("writing the lab's config: %w", err)
		}
	}
	return nil
}

// Prepare writes the config and builds what is missing: the image (its
// packages cached for the next run) and, always, its initrd, so that the
// init in it is the bootd that runs the master.
func Prepare(ctx context.Context, o Options) (string, error) {
	o.defaults()
	if err := o.writeConfigs(); err != nil {
		return "", err
	}
	cfg := o.configPath(1)
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, o.Bootd, append(args, "--config", cfg)...)
		cmd.Stdout, cmd.Stderr = o.Out, o.Out
		return cmd.Run()
	}
	images := o.images()
	names := make([]string, 0, len(images))
	for name := range images {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, image := range names {
		suite := images[image]
		if _, err := os.Lstat(filepath.Join(o.stateDir(1), "images", image, "current")); err != nil {
			fmt.Fprintf(o.Out, "lab: building image %s (%s); packages are cached for the next run\n", image, suite)
			if err := run("image", "build", image, "--suite", suite); err != nil {
				return cfg, fmt.Errorf("building the lab image %s: %w", image, err)
			}
		} else if err := run("initrd", "build", "--image", image, "--force", "--log-level", "warn"); err != nil {
			return cfg, fmt.Errorf("building the lab initrd of %s: %w", image, err)
		}
	}
	return cfg, nil
}

// UpCluster prepares and starts a lab: network, site DHCP, bootd, nodes.
func UpCluster(ctx context.Context, o Options) (*Cluster, error) {
	o.defaults()
	if err := Check(); err != nil {
		return nil, err
	}
	if _, err := Prepare(ctx, o); err != nil {
		return nil, err
	}
	c, err := StartCluster(ctx, o)
	if err != nil {
		return nil, err
	}
	for _, spec := range c.Opt.Specs {
		if _, err := c.PowerOn(spec); err != nil {
			c.Down()
			return nil, err
		}
	}
	return c, nil
}

// StartCluster starts a prepared lab (see Prepare): network, site DHCP,
// bootd; no node is powered on.
func StartCluster(ctx context.Context, o Options) (*Cluster, error) {
	o.defaults()
	if err := Check(); err != nil {
		return nil, err
	}
	if err := o.SiteDHCP.check(); err != nil {
		return nil, err
	}
	l, err := Up(filepath.Join(o.Dir, "lab"), o.Name)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Lab: l, Opt: o, Config: o.configPath(1)}
	for i := 1; i <= o.Masters; i++ {
		c.Configs = append(c.Configs, o.configPath(i))
	}
	if err := l.StartSite(o.SiteDHCP); err != nil {
		l.Down()
		return nil, err
	}
	if err := c.upMasters(ctx); err != nil {
		l.Down()
		return nil, err
	}
	if err := c.waitAPI(ctx, 1, 15*time.Second); err != nil {
		l.Down()
		return nil, err
	}
	return c, nil
}

// PowerOn powers a node on and follows it from now. Not safe for
// concurrent use, as the Lab is not.
func (c *Cluster) PowerOn(spec NodeSpec) (*NodeReport, error) {
	n, err := c.StartNode(spec)
	if err != nil {
		return nil, err
	}
	r := &NodeReport{Node: *n, Hostname: spec.Name, Start: time.Now(), At: map[string]time.Duration{}}
	c.Reports = append(c.Reports, r)
	fmt.Fprintf(c.Opt.Out, "lab: powered on %s (%s, %s, %s)\n", spec.Name, spec.Firmware, n.NIC, spec.MAC)
	return r, nil
}

// observe updates every node's stages from the master's API: the same
// node records the status page shows.
// With several masters, each stage is the first any master saw.
func (c *Cluster) observe(ctx context.Context) {
	for _, r := range c.Reports {
		c.observeNode(ctx, r)
	}
}

// observeNode updates one node's stages (see observe).
func (c *Cluster) observeNode(ctx context.Context, r *NodeReport) {
	for m := 1; m <= c.Opt.Masters; m++ {
		d, err := c.APIOf(m).Node(ctx, r.MAC)
		if err != nil {
			continue
		}
		if d.IP != "" {
			r.IP = d.IP
		}
		// The boot that began after this node was powered on.
		for i := len(d.Boots) - 1; i >= 0; i-- {
			b := d.Boots[i]
			if b.Start.Before(r.Start.Add(-time.Second)) {
				break
			}
			for _, a := range b.Stages {
				if at, done := r.At[string(a.Stage)]; !done || a.Time.Sub(r.Start) < at {
					r.At[string(a.Stage)] = a.Time.Sub(r.Start)
				}
				if a.Stage == events.StageConfig {
					r.Path, _, _ = strings.Cut(a.Detail, " ")
				}
			}
		}
	}
}

// Wait follows the nodes until each reached multi-user or timed out,
// printing each stage as it happens.
func (c *Cluster) Wait(ctx context.Context) {
	printed := map[string]bool{}
	deadline := time.Now().Add(c.Opt.Timeout)
	for {
		c.observe(ctx)
		pending := 0
		for _, r := range c.Reports {
			for _, s := range Stages {
				if d, ok := r.At[s]; ok && !printed[r.Name+s] {
					printed[r.Name+s] = true
					fmt.Fprintf(c.Opt.Out, "lab: %s %-10s %6.1fs\n", r.Name, s, d.Seconds())
				}
			}
			if _, ok := r.At["up"]; ok {
				r.Result = "ok"
			} else if _, ok := r.At["lost"]; ok {
				r.Result = "lost"
			} else if time.Now().After(deadline) {
				r.Result = "timed out"
			} else {
				pending++
			}
		}
		if pending == 0 || ctx.Err() != nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Table writes the end-of-run table.
func (c *Cluster) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "NODE\tMAC\tIP\tHOSTNAME\tFIRMWARE\tNIC\tPATH")
	for _, s := range Stages {
		fmt.Fprint(tw, "\t"+strings.ToUpper(s))
	}
	fmt.Fprintln(tw, "\tRESULT")
	reps := append([]*NodeReport(nil), c.Reports...)
	sort.Slice(reps, func(i, j int) bool { return reps[i].Name < reps[j].Name })
	for _, r := range reps {
		path := r.Path
		if path == "" {
			path = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", r.Name, r.MAC, r.IP, r.Hostname, r.Firmware, r.NIC, path)
		for _, s := range Stages {
			if d, ok := r.At[s]; ok {
				fmt.Fprintf(tw, "\t%.1fs", d.Seconds())
			} else {
				fmt.Fprint(tw, "\t-")
			}
		}
		fmt.Fprintf(tw, "\t%s\n", r.Result)
	}
	tw.Flush()
}

// Node returns a running node of the lab by name.
func (l *Lab) Node(name string) (*Node, bool) {
	for i := range l.Nodes {
		if l.Nodes[i].Name == name {
			return &l.Nodes[i], true
		}
	}
	return nil, false
}

// RestartMaster stops the lab's bootd with sig (SIGKILL: a crash) and
// starts it again, as systemd would.
func (c *Cluster) RestartMaster(sig syscall.Signal) error {
	return c.Restart("master", "bootd", sig, c.Opt.Bootd, "serve", "--config", c.Config)
}

// StopMaster stops the lab's bootd; StartMaster starts it again.
func (c *Cluster) StopMaster(sig syscall.Signal) error { return c.Stop("bootd", sig) }

// StartMaster: see StopMaster. With no argument, master 1; else master i
// (from 1) of a lab of several.
func (c *Cluster) StartMaster(i ...int) error {
	m := 1
	if len(i) > 0 {
		m = i[0]
	}
	_, err := c.Start(MasterRole(m), masterProc("bootd", m), c.Opt.Bootd, "serve", "--config", c.Opt.configPath(m))
	return err
}

// KillBootd kills master i's bootd with SIGKILL, a crash: its keepalived
// lives on and, its check failing, gives the service address up.
func (c *Cluster) KillBootd(i int) error { return c.Stop(masterProc("bootd", i), syscall.SIGKILL) }

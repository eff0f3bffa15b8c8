// Package config loads and validates bootd.yaml, the one file that every bootd
// verb (serve, image, initrd, nodes) reads. Errors name the file, the line and
// the key, and say what was expected, because the admin reading them is
// usually in the middle of bringing a cluster up.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/image"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

// DefaultPath is where bootd looks for its config when --config is not given.
const DefaultPath = "/etc/bootd/bootd.yaml"

// Config is the whole of bootd.yaml.
type Config struct {
	// StateDir holds the image store (STATE/images/NAME/GEN/...).
	StateDir string `yaml:"state_dir"`
	// Interface is the cluster NIC that DHCP and TFTP bind to.
	Interface string  `yaml:"interface"`
	NFS       NFS     `yaml:"nfs"`
	DHCP      DHCP    `yaml:"dhcp"`
	TFTP      TFTP    `yaml:"tftp"`
	Initrd    Initrd  `yaml:"initrd"`
	Syslog    Syslog  `yaml:"syslog"`
	HTTP      HTTP    `yaml:"http"`
	Console   Console `yaml:"console"`
	Status    Status  `yaml:"status"`
	// Address is the IPv4 address nodes reach this master at: a floating
	// service address held by keepalived/VRRP when several masters serve
	// one cluster. Default: the first IPv4 address of Interface.
	Address string `yaml:"address"`
	// Image holds the site's choices for building and preparing images.
	Image image.Settings `yaml:"image"`

	// Defaults apply to every node, listed or not.
	Defaults nodes.Defaults `yaml:"defaults"`
	// UnknownNodes says what a PXE client whose MAC is not in Nodes gets:
	// "boot" (the defaults) or "ignore" (no answer at all).
	UnknownNodes string       `yaml:"unknown_nodes"`
	Nodes        []nodes.Node `yaml:"nodes"`

	// Path is the file this config was read from ("" when built in code).
	Path string `yaml:"-"`

	table   *nodes.Table
	address netip.Addr
	// What checkUse found: see Warnings and CheckServe.
	warnings, serveProblems []string
	// httpAllowGiven: http.allow was set rather than derived from nfs.allow.
	httpAllowGiven bool
}

// ServiceAddr returns address parsed; the zero Addr when it is not set.
func (c *Config) ServiceAddr() netip.Addr { return c.address }

// Table returns the validated node table.
func (c *Config) Table() *nodes.Table { return c.table }

// NFS configures the read-only NFSv3 export of image generations.
type NFS struct {
	// Listen is the one TCP address that serves both MOUNT and NFS.
	// Empty disables the export.
	Listen string `yaml:"listen"`
	// Allow lists the client networks; everyone else is refused.
	Allow []string `yaml:"allow"`
	// SecurePorts refuses clients whose source port is 1024 or above, as
	// kernel nfsd's "secure" export option does.
	SecurePorts bool `yaml:"secure_ports"`
	// MaxConnections bounds client connections in all (default 1024) and
	// MaxConnectionsPerClient those from one address (default 8).
	MaxConnections          int `yaml:"max_connections"`
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
	// SquashUnknown maps root to nobody for clients that are not bootd's
	// nodes: neither a fixed address of the node table nor an address
	// bootd saw a node boot from (default true). AUTH_SYS lets anyone on
	// an allowed network claim root and read the image's root-only files.
	SquashUnknown bool `yaml:"squash_unknown"`
	// Record, if set, is a file where every read-only NFS call is written
	// as a JSON line, by path (at most 1,000,000 lines): how a boot's
	// working set is recorded for bench/storm. Off by default.
	Record string `yaml:"record"`

	allow []netip.Prefix
}

// DHCP configures the PXE-aware DHCP server.
type DHCP struct {
	// Mode is "proxy" (answer PXE clients beside the site's DHCP server,
	// never assign addresses), "full" (assign addresses from the node
	// table, for labs with no DHCP server) or "off".
	Mode string `yaml:"mode"`
	// IPv6RA answers IPv6 router solicitations with an advertisement that
	// offers nothing, so iPXE stops waiting ~13 s for IPv6 on every boot.
	// Only for cluster networks with no IPv6 router of their own.
	IPv6RA bool `yaml:"ipv6_ra"`

	// Full mode only: the cluster subnet, what clients are told about it,
	// and an optional dynamic range for machines not in the node table.
	Subnet    string   `yaml:"subnet"`
	Router    string   `yaml:"router"`
	DNS       []string `yaml:"dns"`
	Domain    string   `yaml:"domain"`
	LeaseTime string   `yaml:"lease_time"`
	Range     []string `yaml:"range"`
	// Relays lists the DHCP relay agents (giaddr) whose requests are
	// answered; relayed requests naming any other address are dropped.
	Relays []string `yaml:"relays"`

	full   FullDHCP
	relays []netip.Addr
}

// RelayAddrs returns the parsed relays.
func (d DHCP) RelayAddrs() []netip.Addr { return d.relays }

// FullDHCP is the dhcp section parsed, for full mode.
type FullDHCP struct {
	Subnet     netip.Prefix
	Router     netip.Addr
	DNS        []netip.Addr
	Domain     string
	LeaseTime  time.Duration
	RangeStart netip.Addr // zero: no dynamic range
	RangeEnd   netip.Addr
}

// Full returns the parsed full-mode settings.
func (d DHCP) Full() FullDHCP { return d.full }

// TFTP configures the boot file server.
type TFTP struct {
	// Listen is the UDP address; "" disables TFTP.
	Listen string `yaml:"listen"`
	// Loaders are the boot loader files served by name; the defaults are
	// where Debian's pxelinux, syslinux-common and syslinux-efi put them.
	Loaders map[string]string `yaml:"loaders"`
	// BusyPoll is how long a transfer polls for the next ACK before it
	// sleeps ("200us" by default, "0" never): an idle master's wake-up per
	// ACK is most of a TFTP round trip. See tftp.Config.BusyPoll.
	BusyPoll string `yaml:"busy_poll"`
	// MaxTransfers bounds transfers in progress in all (default 1024),
	// MaxTransfersPerClient those from one address (default 8), and
	// RequestsPerSecond the sustained rate of new requests from one
	// address (default 20, bursts of twice that).
	MaxTransfers          int     `yaml:"max_transfers"`
	MaxTransfersPerClient int     `yaml:"max_transfers_per_client"`
	RequestsPerSecond     float64 `yaml:"requests_per_second"`

	busyPoll time.Duration
}

// BusyPollDuration returns the parsed busy_poll.
func (t TFTP) BusyPollDuration() time.Duration { return t.busyPoll }

// Syslog configures the receiver of the nodes' forwarded logs.
type Syslog struct {
	// Listen is the TCP and UDP address; "" (the default) receives none.
	Listen string `yaml:"listen"`
	// Allow lists the networks whose logs are kept; required with Listen,
	// because UDP syslog is one unauthenticated packet and everything else
	// on the wire would otherwise be written to the master's disk.
	Allow []string `yaml:"allow"`
	// MaxFileMB caps a node's log: past it, IP.log becomes IP.log.1
	// (replacing the one before), so a node keeps at most twice this.
	MaxFileMB int `yaml:"max_file_mb"`

	allow []netip.Prefix
}

// AllowPrefixes returns syslog.allow parsed.
func (s Syslog) AllowPrefixes() []netip.Prefix { return s.allow }

// MaxFileSize returns max_file_mb in bytes.
func (s Syslog) MaxFileSize() int64 { return int64(s.MaxFileMB) << 20 }

// HTTP configures bootd's HTTP server: the status page, the JSON API, the
// metrics, and where booting nodes report their stages.
type HTTP struct {
	// Listen is the TCP address (default "0.0.0.0:8080"); "" turns the
	// server off, and with it the nodes' stage reports.
	Listen string `yaml:"listen"`
	// Allow lists who may connect: the page and API are read-only, but
	// they show every node. Default: the networks of nfs.allow and
	// loopback.
	Allow []string `yaml:"allow"`
	// Boot says which firmware fetches its kernel and initrd from this
	// server (under /boot/) instead of over TFTP: "chain" (the default)
	// sends every PXE firmware to iPXE (undionly.kpxe, snponly.efi over
	// TFTP) and iPXE to an HTTP script; "ipxe" does that only for firmware
	// that already is iPXE, and gives plain PXE ROMs pxelinux/syslinux;
	// "off" serves every node over TFTP.
	Boot string `yaml:"boot"`

	allow []netip.Prefix
	boot  boot.IPXEMode
}

// BootMode returns http.boot parsed.
func (h HTTP) BootMode() boot.IPXEMode { return h.boot }

// AllowPrefixes returns http.allow parsed, or its default.
func (h HTTP) AllowPrefixes() []netip.Prefix { return h.allow }

// Console configures the receiver of the nodes' kernel consoles
// (netconsole, which the init points at bootd).
type Console struct {
	// Listen is the UDP address (default "0.0.0.0:6666", netconsole's own
	// port); "" receives none and leaves netconsole off on the nodes.
	Listen string `yaml:"listen"`
}

// Status bounds what bootd keeps of each node: its boots, console and
// syslog lines (kept in memory and under STATE/run/nodes.json).
type Status struct {
	// LostAfter is how long a boot may wait for its next stage before it
	// is counted lost (default "10m").
	LostAfter string `yaml:"lost_after"`
	// LogLines and LogKiB bound the console lines and the syslog lines
	// kept per node, each (default 500 lines, 128 KiB).
	LogLines int `yaml:"log_lines"`
	LogKiB   int `yaml:"log_kib"`
	// MaxNodes bounds the node records (default 4096); past it, the node
	// seen longest ago is forgotten.
	MaxNodes int `yaml:"max_nodes"`
	// ProbeEvery is how often bootd asks up nodes that have gone quiet for
	// an ICMP echo (default "20s"; "0s" never): one that misses three in a
	// row died without shutting down, and is counted lost.
	ProbeEvery string `yaml:"probe_every"`

	lostAfter, probeEvery time.Duration
}

// ProbeEveryDuration returns probe_every parsed.
func (s Status) ProbeEveryDuration() time.Duration { return s.probeEvery }

// LostAfterDuration returns lost_after parsed.
func (s Status) LostAfterDuration() time.Duration { return s.lostAfter }

// Initrd configures the generated initramfs.
type Initrd struct {
	// ExtraModules are loaded on every boot besides NFS, overlay and the
	// NIC drivers (e.g. a storage driver for local scratch disks).
	ExtraModules []string `yaml:"extra_modules"`
	// Compression is zstd (default) or gzip.
	Compression string `yaml:"compression"`
}

// DefaultLoaders maps the TFTP names of the boot loaders to their
// Debian locations.
func DefaultLoaders() map[string]string {
	return map[string]string{
		"pxelinux.0":   "/usr/lib/PXELINUX/pxelinux.0",
		"ldlinux.c32":  "/usr/lib/syslinux/modules/bios/ldlinux.c32",
		"syslinux.efi": "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi",
		"ldlinux.e64":  "/usr/lib/syslinux/modules/efi64/ldlinux.e64",
		// iPXE, which http.boot: chain sends plain PXE firmware to.
		boot.ChainBIOS: "/usr/lib/ipxe/undionly.kpxe",
		boot.ChainEFI:  "/usr/lib/ipxe/snponly.efi",
	}
}

// AllowPrefixes returns nfs.allow parsed.
func (n NFS) AllowPrefixes() []netip.Prefix { return n.allow }

// Default returns the configuration used for keys the file leaves out.
func Default() Config {
	return Config{
		StateDir: "/var/lib/bootd",
		NFS: NFS{
			Listen:                  "0.0.0.0:2049",
			SecurePorts:             true,
			SquashUnknown:           true,
			MaxConnections:          1024,
			MaxConnectionsPerClient: 8,
		},
		DHCP: DHCP{Mode: "proxy"},
		TFTP: TFTP{Listen: "0.0.0.0:69", BusyPoll: "200us",
			MaxTransfers: 1024, MaxTransfersPerClient: 8, RequestsPerSecond: 20},
		Syslog:       Syslog{MaxFileMB: 64},
		HTTP:         HTTP{Listen: "0.0.0.0:8080", Boot: "chain"},
		Console:      Console{Listen: "0.0.0.0:6666"},
		Status:       Status{LostAfter: "10m", LogLines: 500, LogKiB: 128, MaxNodes: 4096, ProbeEvery: "20s"},
		Image:        image.Settings{Mirror: image.DefaultMirror},
		Defaults:     nodes.Defaults{Console: "ttyS0,115200n8"},
		UnknownNodes: "boot",
	}
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse validates data as the contents of the config file named path, and
// fills in the defaults: yaml.Marshal of the result is the effective config,
// which Parse reads back as the same. What the file sets but bootd will not
// use is in Warnings; what `bootd serve` needs beyond a valid file, in
// CheckServe.
func Parse(path string, data []byte) (*Config, error) {
	cfg := Default()
	cfg.Path = path
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(path, data, err)
	}
	if len(root.Content) == 0 { // empty file: all defaults
		return &cfg, cfg.validate(path, nil)
	}
	doc := root.Content[0]
	if err := checkDuplicates(path, doc, ""); err != nil {
		return nil, err
	}
	if err := checkShape(path, doc, reflect.TypeOf(cfg), ""); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second document ("---") would be ignored silently: whatever the
	// admin put there would never take effect.
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, fmt.Errorf("%s:%d: a second YAML document: bootd reads one; join them or remove the \"---\"", path, more.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return &cfg, cfg.validate(path, doc)
}

// allowList parses an allow list (key names it in errors).
func allowList(key string, list []string, fail failFunc) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fail(fmt.Sprintf("%s[%d]", key, i), "want a network in CIDR form such as 10.0.0.0/24 or a single address, got %q", s)
		}
		out = append(out, p)
	}
	return out, nil
}

func (c *Config) validate(path string, doc *yaml.Node) error {
	where := func(key string) string {
		if l := lineOf(doc, key); l > 0 {
			return fmt.Sprintf("%s:%d: %s", path, l, key)
		}
		return fmt.Sprintf("%s: %s", path, key)
	}
	fail := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s", where(key), fmt.Sprintf(format, args...))
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fail("state_dir", "want an absolute directory path, got %q", c.StateDir)
	}
	c.StateDir = filepath.Clean(c.StateDir)
	c.address = netip.Addr{}
	if c.Address != "" {
		a, err := netip.ParseAddr(c.Address)
		if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return fail("address", "want the IPv4 address nodes reach this master at, such as a keepalived VIP \"10.0.0.10\" (or leave it out for the interface's address), got %q", c.Address)
		}
		c.address = a
	}
	if c.NFS.Listen != "" {
		if _, err := netip.ParseAddrPort(c.NFS.Listen); err != nil {
			return fail("nfs.listen", "want IP:PORT such as \"0.0.0.0:2049\" (or \"\" to disable NFS), got %q", c.NFS.Listen)
		}
	}
	switch c.DHCP.Mode {
	case "proxy", "full", "off":
	default:
		return fail("dhcp.mode", "want proxy, full or off, got %q", c.DHCP.Mode)
	}
	if c.DHCP.Mode == "full" {
		if err := c.validateFull(fail); err != nil {
			return err
		}
	}
	if c.TFTP.Listen != "" {
		if _, err := netip.ParseAddrPort(c.TFTP.Listen); err != nil {
			return fail("tftp.listen", "want IP:PORT such as \"0.0.0.0:69\" (or \"\" to disable TFTP), got %q", c.TFTP.Listen)
		}
	}
	bp, err := time.ParseDuration(c.TFTP.BusyPoll)
	if err != nil || bp < 0 || bp > 10*time.Millisecond {
		return fail("tftp.busy_poll", "want a duration up to 10ms such as \"200us\", or \"0\" to never poll, got %q", c.TFTP.BusyPoll)
	}
	c.TFTP.busyPoll = bp
	def := Default()
	for _, l := range []struct {
		key    string
		v      *int
		orElse int
	}{{"tftp.max_transfers", &c.TFTP.MaxTransfers, def.TFTP.MaxTransfers}, {"tftp.max_transfers_per_client", &c.TFTP.MaxTransfersPerClient, def.TFTP.MaxTransfersPerClient},
		{"nfs.max_connections", &c.NFS.MaxConnections, def.NFS.MaxConnections}, {"nfs.max_connections_per_client", &c.NFS.MaxConnectionsPerClient, def.NFS.MaxConnectionsPerClient}} {
		if *l.v < 0 || *l.v > 1<<20 {
			return fail(l.key, "want a number from 1 to 1048576 (or 0 for the default, %d), got %d", l.orElse, *l.v)
		}
		if *l.v == 0 {
			*l.v = l.orElse
		}
	}
	if r := c.TFTP.RequestsPerSecond; r < 0 || r > 1e6 {
		return fail("tftp.requests_per_second", "want a rate from 1 to 1000000 (or 0 for the default, %v), got %v", def.TFTP.RequestsPerSecond, r)
	}
	if c.TFTP.RequestsPerSecond == 0 {
		c.TFTP.RequestsPerSecond = def.TFTP.RequestsPerSecond
	}
	c.DHCP.relays = nil
	for i, s := range c.DHCP.Relays {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return fail(fmt.Sprintf("dhcp.relays[%d]", i), "want the IPv4 address a relay agent puts in giaddr, got %q", s)
		}
		c.DHCP.relays = append(c.DHCP.relays, a)
	}
	loaders := DefaultLoaders()
	for name, path := range c.TFTP.Loaders {
		if _, known := loaders[name]; !known {
			return fail("tftp.loaders."+name, "unknown loader (known: ldlinux.c32, ldlinux.e64, pxelinux.0, snponly.efi, syslinux.efi, undionly.kpxe)")
		}
		if !filepath.IsAbs(path) {
			return fail("tftp.loaders."+name, "want an absolute file path, got %q", path)
		}
		loaders[name] = path
	}
	c.TFTP.Loaders = loaders
	if c.Syslog.Listen != "" {
		if _, err := netip.ParseAddrPort(c.Syslog.Listen); err != nil {
			return fail("syslog.listen", "want IP:PORT such as \"0.0.0.0:514\", got %q", c.Syslog.Listen)
		}
		if len(c.Syslog.Allow) == 0 {
			return fail("syslog.allow", "list the node networks whose logs are kept, e.g. [\"10.0.0.0/24\"]; everyone else is refused")
		}
	}
	if c.Syslog.allow, err = allowList("syslog.allow", c.Syslog.Allow, fail); err != nil {
		return err
	}
	if c.Syslog.MaxFileMB < 1 || c.Syslog.MaxFileMB > 1<<20 {
		return fail("syslog.max_file_mb", "want a whole number of MiB from 1 to 1048576, got %d", c.Syslog.MaxFileMB)
	}
	switch c.Initrd.Compression {
	case "", "zstd", "gzip":
	default:
		return fail("initrd.compression", "want zstd or gzip, got %q", c.Initrd.Compression)
	}
	if err := c.validateImage(fail); err != nil {
		return err
	}
	switch c.UnknownNodes {
	case "boot", "ignore":
	default:
		return fail("unknown_nodes", "want boot or ignore, got %q", c.UnknownNodes)
	}
	// These go into every pxelinux config and kernel command line: a line
	// break would start a config line of its own.
	for key, v := range map[string]string{"defaults.append": c.Defaults.Append, "defaults.console": c.Defaults.Console} {
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fail(key, "must be one line without control characters, got %q", v)
		}
	}
	if c.Defaults.Image != "" {
		if err := store.ValidName(c.Defaults.Image); err != nil {
			return fail("defaults.image", "%v", err)
		}
	}
	table, err := nodes.NewTable(c.Nodes)
	if err != nil {
		var ne *nodes.Error
		if errors.As(err, &ne) {
			return fail(fmt.Sprintf("nodes[%d].%s", ne.Index, ne.Field), "%s", ne.Msg)
		}
		return fail("nodes", "%v", err)
	}
	c.table = table
	if c.NFS.allow, err = allowList("nfs.allow", c.NFS.Allow, fail); err != nil {
		return err
	}
	if c.NFS.Record != "" && !filepath.IsAbs(c.NFS.Record) {
		return fail("nfs.record", "want an absolute file path, got %q", c.NFS.Record)
	}
	if err := c.validateStatus(fail); err != nil {
		return err
	}
	c.checkUse(where)
	return nil
}

// validateStatus checks http, console and status.
func (c *Config) validateStatus(fail failFunc) error {
	for key, addr := range map[string]string{"http.listen": c.HTTP.Listen, "console.listen": c.Console.Listen} {
		if addr == "" {
			continue
		}
		if ap, err := netip.ParseAddrPort(addr); err != nil || ap.Port() == 0 {
			return fail(key, "want IP:PORT such as \"0.0.0.0:8080\", or \"\" for none, got %q", addr)
		}
	}
	var err error
	if c.HTTP.Boot == "" {
		c.HTTP.Boot = "chain"
	}
	if c.HTTP.boot, err = boot.ParseIPXEMode(c.HTTP.Boot); err != nil {
		return fail("http.boot", "%v", err)
	}
	if c.HTTP.allow, err = allowList("http.allow", c.HTTP.Allow, fail); err != nil {
		return err
	}
	c.httpAllowGiven = len(c.HTTP.Allow) > 0
	if !c.httpAllowGiven {
		c.HTTP.allow = append(append([]netip.Prefix(nil), c.NFS.allow...),
			netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		// Written out, so that the effective config shows who may connect.
		if c.HTTP.Listen != "" {
			c.HTTP.Allow = nil
			for _, p := range c.HTTP.allow {
				c.HTTP.Allow = append(c.HTTP.Allow, p.String())
			}
		}
	}
	d, err := time.ParseDuration(c.Status.LostAfter)
	if err != nil || d < 10*time.Second || d > 24*time.Hour {
		return fail("status.lost_after", "want a duration from 10s to 24h such as \"10m\", got %q", c.Status.LostAfter)
	}
	c.Status.lostAfter = d
	if d, err = time.ParseDuration(c.Status.ProbeEvery); err != nil || (d != 0 && d < time.Second) || d > time.Hour {
		return fail("status.probe_every", "want a duration from 1s to 1h such as \"20s\", or \"0s\" for never, got %q", c.Status.ProbeEvery)
	}
	c.Status.probeEvery = d
	if c.Status.LogLines < 1 || c.Status.LogLines > 100000 {
		return fail("status.log_lines", "want 1 to 100000, got %d", c.Status.LogLines)
	}
	if c.Status.LogKiB < 1 || c.Status.LogKiB > 64<<10 {
		return fail("status.log_kib", "want 1 to 65536, got %d", c.Status.LogKiB)
	}
	if c.Status.MaxNodes < 1 || c.Status.MaxNodes > 1<<20 {
		return fail("status.max_nodes", "want 1 to 1048576, got %d", c.Status.MaxNodes)
	}
	return nil
}

func (c *Config) validateFull(fail failFunc) error {
	d := &c.DHCP
	f := FullDHCP{Domain: d.Domain}
	p, err := netip.ParsePrefix(d.Subnet)
	if err != nil || !p.Addr().Is4() {
		return fail("dhcp.subnet", "full mode needs the cluster subnet, e.g. 10.0.0.0/24, got %q", d.Subnet)
	}
	f.Subnet = p.Masked()
	in := func(key, s string) (netip.Addr, error) {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return a, fail(key, "want an IPv4 address, got %q", s)
		}
		if !f.Subnet.Contains(a) {
			return a, fail(key, "%s is not in dhcp.subnet %s", a, f.Subnet)
		}
		return a, nil
	}
	if d.Router != "" {
		if f.Router, err = in("dhcp.router", d.Router); err != nil {
			return err
		}
	}
	for i, s := range d.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return fail(fmt.Sprintf("dhcp.dns[%d]", i), "want an IPv4 address, got %q", s)
		}
		f.DNS = append(f.DNS, a)
	}
	if d.LeaseTime == "" {
		d.LeaseTime = "12h"
	}
	lt, err := time.ParseDuration(d.LeaseTime)
	if err != nil || lt < time.Minute {
		return fail("dhcp.lease_time", "want a duration of a minute or more, such as 12h, got %q", d.LeaseTime)
	}
	f.LeaseTime = lt
	if len(d.Range) != 0 {
		if len(d.Range) != 2 {
			return fail("dhcp.range", "want [FIRST, LAST], two addresses")
		}
		if f.RangeStart, err = in("dhcp.range[0]", d.Range[0]); err != nil {
			return err
		}
		if f.RangeEnd, err = in("dhcp.range[1]", d.Range[1]); err != nil {
			return err
		}
		if f.RangeEnd.Less(f.RangeStart) {
			return fail("dhcp.range", "the first address comes after the last")
		}
	}
	for i, n := range c.Nodes {
		if n.IP == "" {
			continue
		}
		if a, err := netip.ParseAddr(n.IP); err == nil && !f.Subnet.Contains(a) {
			return fail(fmt.Sprintf("nodes[%d].ip", i), "%s is not in dhcp.subnet %s", a, f.Subnet)
		}
	}
	d.full = f
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// checkShape walks the YAML tree beside the Go type so that an unknown key or
// a list where a value belongs is reported with its line and full key path
// and the keys that would have been accepted.
func checkShape(path string, n *yaml.Node, t reflect.Type, key string) error {
	if t.Kind() == reflect.Pointer && n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an optional section left out, as yaml.Marshal writes it
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	where := func() string {
		if key == "" {
			return "the top level"
		}
		return key
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s:%d: %s: want a mapping of keys (%s), got %s", path, n.Line, where(), strings.Join(knownKeys(t), ", "), kindName(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				return fmt.Errorf("%s:%d: unknown key %q in %s (known keys: %s)", path, k.Line, k.Value, where(), strings.Join(knownKeys(t), ", "))
			}
			if err := checkShape(path, v, f.Type, join(key, k.Value)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s:%d: %s: want a mapping, got %s", path, n.Line, where(), kindName(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkShape(path, n.Content[i+1], t.Elem(), join(key, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s:%d: %s: want a list, got %s", path, n.Line, where(), kindName(n))
		}
		for i, c := range n.Content {
			if err := checkShape(path, c, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!bool" && n.Tag != "!!null") {
			return fmt.Errorf("%s:%d: %s: want true or false, got %s", path, n.Line, where(), kindName(n))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: %s: want a single value, got %s", path, n.Line, where(), kindName(n))
		}
	case reflect.Int, reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!null") {
			return fmt.Errorf("%s:%d: %s: want a whole number, got %s", path, n.Line, where(), kindName(n))
		}
	}
	return nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag := strings.Split(f.Tag.Get("yaml"), ",")[0]; tag == name && tag != "-" && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func knownKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag := strings.Split(f.Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" && f.IsExported() {
			keys = append(keys, tag)
		}
	}
	sort.Strings(keys)
	return keys
}

// lineOf finds the line of a dotted key path such as "nfs.allow[1]"; 0 when
// the key is absent (a default was used).
func lineOf(doc *yaml.Node, key string) int {
	n := doc
	line := 0
	for _, part := range strings.Split(key, ".") {
		idx := -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			fmt.Sscanf(part[i:], "[%d]", &idx)
			part = part[:i]
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line = n.Content[i].Line
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return line
		}
		n = next
		if idx >= 0 && n.Kind == yaml.SequenceNode && idx < len(n.Content) {
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

// Package boot is the boot plan: the one model that bootd's DHCP and TFTP
// servers (and later its HTTP server) consult to decide what a machine
// boots. It answers, for a MAC address: whether bootd serves it at all,
// which loader its firmware needs, and, when the loader asks for its
// config, the image generation, kernel, initrd and kernel command line.
//
// The generation is resolved when the loader fetches its config and
// written into it, so a node keeps the generation it booted even if
// another is published while it starts.
package boot

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

// ErrIgnored says that bootd does not serve this machine
// (unknown_nodes: ignore).
var ErrIgnored = errors.New("machine not in the node table and unknown_nodes is ignore")

// Arch is a client system architecture (DHCP option 93, RFC 4578).
type Arch uint16

const (
	ArchBIOS       Arch = 0
	ArchEFIx64     Arch = 7
	ArchEFIBC      Arch = 9 // "EFI BC", sent by x64 firmware that misreads the spec
	ArchEFIIA32    Arch = 6
	ArchEFIARM64   Arch = 11
	ArchEFIx64HTTP Arch = 16 // x64 UEFI HTTP Boot
)

// Firmware is the kind of boot loader a client needs.
type Firmware int

const (
	FirmwareUnsupported Firmware = iota
	FirmwareBIOS                 // pxelinux.0
	FirmwareEFI64                // syslinux.efi (x86-64)
)

func (f Firmware) String() string {
	switch f {
	case FirmwareBIOS:
		return "bios"
	case FirmwareEFI64:
		return "uefi"
	}
	return "unsupported"
}

// FirmwareFor maps option 93 to the loader family bootd serves.
func FirmwareFor(a Arch) Firmware {
	switch a {
	case ArchBIOS:
		return FirmwareBIOS
	case ArchEFIx64, ArchEFIBC, ArchEFIx64HTTP:
		return FirmwareEFI64
	}
	return FirmwareUnsupported
}

// Loader is the TFTP name of the first-stage loader for a firmware.
func (f Firmware) Loader() string {
	switch f {
	case FirmwareBIOS:
		return "pxelinux.0"
	case FirmwareEFI64:
		return "syslinux.efi"
	}
	return ""
}

// Options configure a Planner.
type Options struct {
	Nodes       *nodes.Table
	Defaults    nodes.Defaults
	BootUnknown bool
	Store       *store.Store
	// Loaders maps the names of the loader files bootd serves
	// (pxelinux.0, syslinux.efi, undionly.kpxe, ...) to files on this host.
	Loaders map[string]string
	// Where nodes reach bootd's NFS export, HTTP server (boot files over
	// HTTP and stage reports), syslog receiver and netconsole receiver;
	// each left unset when bootd does not listen. Each is written on the
	// command line only when a node can send to it (Params.Args).
	NFS, HTTP, Log, Console netip.AddrPort
	// IPXE says which firmware boots over HTTP (IPXEOff without HTTP).
	IPXE IPXEMode
}

// Planner makes boot plans from the node table and the image store. It
// is the one place that knows what a machine boots; the DHCP, TFTP and
// HTTP servers only ask it.
//
// What it plans from can be replaced while it serves (Update, on a config
// reload): every answer is made from one snapshot of the options, so a
// DHCP exchange, a TFTP transfer or an HTTP download sees the table of
// before or of after, never a mix, and one that began before goes on.
type Planner struct {
	cur atomic.Pointer[Options]
}

// NewPlanner returns a planner for o.
func NewPlanner(o Options) *Planner {
	p := &Planner{}
	p.Update(o)
	return p
}

// Update makes the planner answer from o from now on. The options are
// copied; the caller may not change the table afterwards (nodes.Table is
// immutable).
func (p *Planner) Update(o Options) {
	if o.Nodes == nil {
		o.Nodes, _ = nodes.NewTable(nil)
	}
	if !usable(o.HTTP) {
		o.IPXE = IPXEOff
	}
	o.Loaders = maps.Clone(o.Loaders)
	p.cur.Store(&o)
}

// Options returns the options the planner answers from now, with
// Update's adjustments (IPXEOff without a usable HTTP address). The
// Loaders map is the planner's own: read it, do not change it.
func (p *Planner) Options() Options { return *p.cur.Load() }

// Nodes is the node table, in its order.
func (p *Planner) Nodes() []nodes.Node { return p.cur.Load().Nodes.All() }

// Spec is what one machine boots.
type Spec struct {
	MAC        net.HardwareAddr
	Hostname   string
	Image      string
	Generation int
	Kernel     string // TFTP name
	Initrd     string // TFTP name
	Console    string // e.g. ttyS0,115200n8
	Params     Params
	Append     string
}

// Serves reports whether bootd answers this machine at all.
func (p *Planner) Serves(mac net.HardwareAddr) bool {
	o := p.cur.Load()
	if _, ok := o.Nodes.Lookup(mac); ok {
		return true
	}
	return o.BootUnknown
}

// Node returns the machine's node table entry, if any.
func (p *Planner) Node(mac net.HardwareAddr) (nodes.Node, bool) {
	return p.cur.Load().Nodes.Lookup(mac)
}

// NodeAt returns the node whose fixed address (nodes[].ip) is a, if any.
func (p *Planner) NodeAt(a netip.Addr) (nodes.Node, bool) { return p.cur.Load().Nodes.At(a) }

// Plan resolves what the machine boots now.
func (p *Planner) Plan(mac net.HardwareAddr) (Spec, error) { return p.cur.Load().plan(mac) }

func (o *Options) plan(mac net.HardwareAddr) (Spec, error) {
	n, known := o.Nodes.Lookup(mac)
	if !known && !o.BootUnknown {
		return Spec{}, ErrIgnored
	}
	image := n.Image
	if image == "" {
		image = o.Defaults.Image
	}
	if image == "" {
		return Spec{}, fmt.Errorf("node %s: no image (set defaults.image or the node's image)", mac)
	}
	gen, err := o.Store.Current(image)
	if err != nil {
		return Spec{}, fmt.Errorf("node %s: %w", mac, err)
	}
	append_ := strings.TrimSpace(strings.Join([]string{o.Defaults.Append, n.Append}, " "))
	s := Spec{
		MAC:        mac,
		Hostname:   n.Hostname,
		Image:      image,
		Generation: gen,
		Kernel:     KernelPath(image, gen),
		Initrd:     InitrdPath(image, gen),
		Console:    o.Defaults.Console,
		Append:     append_,
		Params: Params{
			NFS:      o.NFS,
			Export:   fmt.Sprintf("/%s/%d", image, gen),
			Hostname: n.Hostname,
			BootIF:   mac,
			Report:   o.HTTP,
			Log:      o.Log,
			Console:  o.Console,
		},
	}
	return s, nil
}

// KernelPath and InitrdPath are the boot-tree names of a generation's
// boot files; BootFile maps them back.
func KernelPath(image string, gen int) string { return fmt.Sprintf("images/%s/%d/vmlinuz", image, gen) }

// InitrdPath: see KernelPath.
func InitrdPath(image string, gen int) string {
	return fmt.Sprintf("images/%s/%d/initrd.img", image, gen)
}

// Cmdline is the kernel command line of the plan.
func (s Spec) Cmdline() string {
	var w []string
	if s.Console != "" {
		w = append(w, "console=tty0", "console="+s.Console)
	}
	w = append(w, s.Params.Args()...)
	if s.Append != "" {
		w = append(w, s.Append)
	}
	return strings.Join(w, " ")
}

// PXELinuxConfig is the pxelinux.cfg file for the plan; pxelinux.0 and
// syslinux.efi read the same syntax.
func (s Spec) PXELinuxConfig() string {
	var b strings.Builder
	if port, speed, ok := serialFor(s.Console); ok {
		// Without SERIAL the loader prints nothing on a serial console.
		fmt.Fprintf(&b, "SERIAL %d %s\n", port, speed)
	}
	fmt.Fprintf(&b, "# bootd: %s boots %s generation %d\n", s.MAC, s.Image, s.Generation)
	fmt.Fprintf(&b, "DEFAULT bootd\nPROMPT 0\nTIMEOUT 0\n")
	fmt.Fprintf(&b, "LABEL bootd\n  KERNEL %s\n  INITRD %s\n  APPEND %s\n", s.Kernel, s.Initrd, s.Cmdline())
	if len(s.MAC) == 0 {
		// The default config does not know the MAC: have the loader add
		// BOOTIF itself.
		b.WriteString("  IPAPPEND 2\n")
	}
	return b.String()
}

// serialFor turns "ttyS0,115200n8" into pxelinux's "SERIAL 0 115200".
func serialFor(console string) (int, string, bool) {
	dev, opts, _ := strings.Cut(console, ",")
	if !strings.HasPrefix(dev, "ttyS") {
		return 0, "", false
	}
	var port int
	if _, err := fmt.Sscanf(dev, "ttyS%d", &port); err != nil {
		return 0, "", false
	}
	speed := strings.TrimRight(opts, "noe78")
	if speed == "" {
		speed = "115200"
	}
	return port, speed, true
}

// Package pid1 is the init of bootd's initrd: the first process on a
// diskless node. It loads the kernel modules the node's hardware needs,
// brings the boot NIC up by DHCP, mounts the image generation from bootd's
// NFS export read-only, stacks a RAM layer on it (overlayfs; aufs when
// asked and present), records what the booted system needs to know under
// /run/bootd, and hands over to the image's init with switch_root. When
// bootd asks, it sends the kernel's console to bootd from the moment the
// NIC is up, and reports to bootd that the root is mounted.
//
// It reads everything from the kernel command line (see boot.Params), says
// what it does on the console with timings, retries each step with
// back-off, and when a step keeps failing it names what failed and reboots
// after bootd.timeout: never a silent hang, never a kernel panic from init
// exiting.
package pid1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/u-root/u-root/pkg/mount"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/initrd"
)

// Paths inside the initramfs; /run moves into the new root, so what is
// under /run/bootd stays visible to the booted system.
const (
	roDir   = "/run/bootd/ro" // the NFS lower layer
	rwDir   = "/run/bootd/rw" // the tmpfs upper layer
	newRoot = "/newroot"
)

type initProc struct {
	out      io.Writer
	uptime0  time.Duration // kernel uptime when init started
	start    time.Time
	params   boot.Params
	deadline time.Time
	step     atomic.Value // string: the step running, for the watchdog
}

// watchdogGrace is how long past bootd.timeout a step may stay blocked
// before the watchdog reboots the node.
const watchdogGrace = 30 * time.Second

// watchdog calls fire with the step then running if it is not stopped
// within d. retry gives up on a failing step at the deadline, but a step
// blocked in a system call never returns to be given up on: a hard NFS
// mount waits for its server for ever. The watchdog runs on another
// thread and reboots the node anyway.
func (p *initProc) watchdog(d time.Duration, fire func(step string)) (stop func() bool) {
	t := time.AfterFunc(d, func() {
		s, _ := p.step.Load().(string)
		fire(s)
	})
	return t.Stop
}

// Main runs the init. It never returns.
func Main() {
	// DHCP transaction ids need no cryptographic randomness, and early in
	// boot (no RDRAND, no virtio-rng) the kernel's CRNG may not be ready
	// for a minute: let the DHCP library read /dev/urandom instead of
	// waiting on getrandom(2).
	os.Setenv("UROOT_NOHWRNG", "1")
	p := &initProc{out: os.Stdout, start: time.Now()}
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		p.out = c
	}
	defer func() {
		if r := recover(); r != nil {
			p.fatal("init crashed: %v", r)
		}
	}()
	p.run()
	p.fatal("switch_root returned")
}

// uptime is the time since the kernel started.
func (p *initProc) uptime() time.Duration { return p.uptime0 + time.Since(p.start) }

func (p *initProc) say(format string, args ...any) {
	fmt.Fprintf(p.out, "[%8.3f] bootd-init: %s\n", p.uptime().Seconds(), fmt.Sprintf(format, args...))
}

// fatal names what failed and reboots; the node retries from PXE.
func (p *initProc) fatal(format string, args ...any) {
	p.say("FATAL: "+format, args...)
	p.say("rebooting in 10s")
	time.Sleep(10 * time.Second)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

// retry runs a step until it works, backing off, until the boot deadline.
func (p *initProc) retry(what string, f func() error) {
	p.step.Store(what)
	delay := time.Second
	for attempt := 1; ; attempt++ {
		t := time.Now()
		err := f()
		if err == nil {
			p.say("%s: done in %v", what, time.Since(t).Round(time.Millisecond))
			return
		}
		left := time.Until(p.deadline)
		if left <= 0 {
			p.fatal("%s failed: %v (gave up after %d attempts, bootd.timeout=%v)", what, err, attempt, p.params.Timeout)
		}
		p.say("%s failed: %v (attempt %d; retrying in %v, rebooting in %v)", what, err, attempt, delay, left.Round(time.Second))
		time.Sleep(min(delay, left))
		delay = min(2*delay, 10*time.Second)
	}
}

func (p *initProc) run() {
	if err := mountBasics(); err != nil {
		p.fatal("mounting /proc, /sys, /dev, /run: %v", err)
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if s, err := strconv.ParseFloat(f[0], 64); err == nil {
				p.uptime0 = time.Duration(s * float64(time.Second))
			}
		}
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	params, err := boot.ParseCmdline(string(cmdline))
	if err != nil {
		p.params.Timeout = 300 * time.Second
		p.fatal("kernel command line: %v", err)
	}
	p.params = params
	p.deadline = p.start.Add(params.Timeout)
	p.say("booting %s from %s (hostname %q)", params.Export, params.NFS, params.Hostname)
	stopWatchdog := p.watchdog(time.Until(p.deadline)+watchdogGrace, func(step string) {
		p.fatal("%s: still blocked %v after bootd.timeout=%v", step, watchdogGrace, params.Timeout)
	})

	man, mods, err := readManifest()
	if err != nil {
		p.fatal("this initrd is damaged: %v", err)
	}
	modDir := filepath.Join("/lib/modules", man.Kernel)
	var ifname string
	p.retry("loading NIC drivers", func() error {
		loaded, err := loadNICDrivers(modDir, mods, man.NIC)
		if err == nil {
			p.say("NIC drivers for the devices present: %s", strings.Join(loaded, " "))
		}
		return err
	})
	p.retry("finding the boot NIC", func() error {
		var err error
		ifname, err = findBootNIC(params.BootIF, 10*time.Second)
		return err
	})
	// The link negotiates (seconds, on some NICs) while the NFS modules
	// load.
	if l, err := netlink.LinkByName(ifname); err == nil {
		netlink.LinkSetUp(l)
	}
	p.retry("loading NFS and overlay modules", func() error { return loadModules(modDir, mods, man.Load, nil) })
	var nc *netConf
	if a := params.Addr; a != nil && macOf(ifname).String() == a.MAC.String() {
		// The firmware (iPXE) already holds an address: a second DHCP
		// would only ask the same server the same question.
		nc = fromFirmware(a)
		p.say("%s: address %s from the firmware (bootd.ip), no DHCP", ifname, nc.addr.String())
		p.retry("bringing "+ifname+" up", func() error { return linkUp(ifname) })
	} else {
		if a != nil {
			p.say("bootd.ip is for %s, the boot NIC %s is %s: asking DHCP", a.MAC, ifname, macOf(ifname))
		}
		p.retry("DHCP on "+ifname, func() error {
			lease, err := dhcp(ifname, params.Hostname)
			if err == nil {
				nc = fromLease(lease.ACK)
			}
			return err
		})
		p.say("%s: address %s from %s", ifname, nc.addr.String(), nc.server)
	}
	p.retry("configuring "+ifname, func() error { return configure(ifname, nc) })
	if params.Console.IsValid() {
		p.step.Store("sending the kernel console to " + params.Console.String())
		p.captureConsole(ifname, nc.addr.IP, modDir, mods)
	}
	p.retry("mounting "+params.Export+" read-only from "+params.NFS.String(), func() error { return mountNFS(params) })
	p.retry("stacking the RAM layer ("+params.Union+", tmpfs size "+params.TmpfsSize+")", func() error { return stackUnion(params, p) })
	hostname := params.Hostname
	if hostname == "" {
		hostname = nc.hostname
	}
	me := newReport(params, macOf(ifname), hostname)
	if err := handover(ifname, hostname, me, nc, params); err != nil {
		p.fatal("preparing the new root: %v", err)
	}
	if params.Report.IsValid() {
		p.step.Store("reporting to bootd at " + params.Report.String())
		me.Stage, me.Detail = "root", fmt.Sprintf("root mounted in %.1fs", p.uptime().Seconds())
		if err := sendReport(params.Report, me, reportTimeout); err != nil {
			p.say("reporting the root stage to bootd at %s: %v (booting on)", params.Report, err)
		} else {
			p.say("reported the root stage to bootd at %s", params.Report)
		}
	}
	p.say("switching to %s after %v", params.Init, time.Since(p.start).Round(time.Millisecond))
	stopWatchdog()
	if err := mount.SwitchRoot(newRoot, params.Init); err != nil {
		p.fatal("switch_root: %v", err)
	}
}

func mountBasics() error {
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%s: %w", m.dir, err)
		}
	}
	return nil
}

func readManifest() (*initrd.Manifest, *initrd.Modules, error) {
	b, err := os.ReadFile("/" + initrd.ManifestPath)
	if err != nil {
		return nil, nil, err
	}
	var man initrd.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", initrd.ManifestPath, err)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	if running := unix.ByteSliceToString(uts.Release[:]); running != man.Kernel {
		return nil, nil, fmt.Errorf("it carries modules for kernel %s but %s is running", man.Kernel, running)
	}
	mods, err := initrd.ReadModules(filepath.Join("/lib/modules", man.Kernel))
	return &man, mods, err
}

// loadModules loads modules with their dependencies, in order; opts are a
// module's parameters ("name=value ..."), by module name.
func loadModules(dir string, mods *initrd.Modules, names []string, opts map[string]string) error {
	paths, _ := mods.Closure(names) // missing ones are built in
	for _, rel := range paths {
		f, err := os.Open(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		err = kmodule.FileInit(f, opts[initrd.ModuleName(rel)], 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %w", initrd.ModuleName(rel), err)
		}
	}
	return nil
}

// loadNICDrivers loads the carried drivers whose aliases match a device
// present. Bus drivers (virtio_pci) make new devices appear, so it looks
// again until nothing new matches.
func loadNICDrivers(dir string, mods *initrd.Modules, carried []string) ([]string, error) {
	want := map[string]bool{}
	for _, n := range carried {
		want[n] = true
	}
	done := map[string]bool{}
	var loaded []string
	for round := 0; round < 4; round++ {
		var next []string
		aliases, _ := filepath.Glob("/sys/bus/*/devices/*/modalias")
		for _, a := range aliases {
			b, err := os.ReadFile(a)
			if err != nil {
				continue
			}
			for _, m := range mods.Match(strings.TrimSpace(string(b))) {
				if want[m] && !done[m] {
					done[m] = true
					next = append(next, m)
				}
			}
		}
		if len(next) == 0 {
			break
		}
		if err := loadModules(dir, mods, next, nil); err != nil {
			return loaded, err
		}
		loaded = append(loaded, next...)
		time.Sleep(200 * time.Millisecond) // let bus drivers register their devices
	}
	if len(loaded) == 0 {
		return nil, errors.New("no NIC driver in this initrd matches a device of this machine (see /sys/bus/pci/devices/*/modalias)")
	}
	return loaded, nil
}

// findBootNIC finds the interface with the BOOTIF MAC, or else the first
// Ethernet interface that gets a link.
func findBootNIC(bootif net.HardwareAddr, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ifs, _ := net.Interfaces()
		var candidates []string
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) != 6 {
				continue
			}
			if bootif != nil && i.HardwareAddr.String() == bootif.String() {
				return i.Name, nil
			}
			candidates = append(candidates, i.Name)
		}
		if bootif == nil {
			for _, name := range candidates {
				if l, err := netlink.LinkByName(name); err == nil {
					netlink.LinkSetUp(l)
					if carrier(name) {
						return name, nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			if bootif != nil {
				return "", fmt.Errorf("no interface has the boot MAC %s (have: %s)", bootif, strings.Join(candidates, " "))
			}
			return "", fmt.Errorf("no Ethernet interface has a link (have: %s)", strings.Join(candidates, " "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func carrier(name string) bool {
	b, err := os.ReadFile("/sys/class/net/" + name + "/carrier")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// dhcp gets a lease on the interface. Offers without an address are a
// proxy-DHCP server's (bootd's own, among others): they are never taken.
func dhcp(ifname, hostname string) (*nclient4.Lease, error) {
	if err := linkUp(ifname); err != nil {
		return nil, err
	}
	c, err := nclient4.New(ifname, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("bootd-init")),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionDomainName, dhcpv4.OptionInterfaceMTU, dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionHostName,
			dhcpv4.OptionNTPServers),
	}
	if hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	}
	discover, err := dhcpv4.NewDiscovery(c.InterfaceAddr(), append(mods, dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))...)
	if err != nil {
		return nil, err
	}
	offer, err := c.SendAndRead(ctx, c.RemoteAddr(), discover, func(m *dhcpv4.DHCPv4) bool {
		return m.MessageType() == dhcpv4.MessageTypeOffer && m.YourIPAddr != nil && !m.YourIPAddr.IsUnspecified()
	})
	if err != nil {
		return nil, fmt.Errorf("no DHCP offer with an address: %w", err)
	}
	return c.RequestFromOffer(ctx, offer, mods...)
}

// linkUp sets the NIC up and waits up to 5 s for a link.
func linkUp(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", ifname, err)
	}
	for i := 0; i < 50 && !carrier(ifname); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if !carrier(ifname) {
		return fmt.Errorf("%s has no link (cable, switch port?)", ifname)
	}
	return nil
}

func macOf(ifname string) net.HardwareAddr {
	if l, err := net.InterfaceByName(ifname); err == nil {
		return l.HardwareAddr
	}
	return nil
}

func maskBits(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

// netConf is the boot NIC's configuration: from the init's own DHCP, or
// the address the firmware got (bootd.ip).
type netConf struct {
	addr     net.IPNet
	routers  []net.IP
	routes   []*dhcpv4.Route // classless static routes (RFC 3442)
	dns      []net.IP
	domain   string
	hostname string
	mtu      int
	server   string // the DHCP server, or "firmware"
	lease    time.Duration
}

func fromLease(ack *dhcpv4.DHCPv4) *netConf {
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	nc := &netConf{addr: net.IPNet{IP: ack.YourIPAddr, Mask: mask}, routers: ack.Router(), routes: ack.ClasslessStaticRoute(),
		dns: ack.DNS(), domain: ack.DomainName(), hostname: ack.HostName(), server: ack.ServerIdentifier().String(),
		lease: ack.IPAddressLeaseTime(0)}
	if b := ack.GetOneOption(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		nc.mtu = int(b[0])<<8 | int(b[1])
	}
	return nc
}

func fromFirmware(a *boot.StaticAddr) *netConf {
	nc := &netConf{addr: net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), 32)}, server: "firmware"}
	if a.Gateway.IsValid() {
		nc.routers = []net.IP{a.Gateway.AsSlice()}
	}
	if a.DNS.IsValid() {
		nc.dns = []net.IP{a.DNS.AsSlice()}
	}
	return nc
}

// configure applies the configuration with netlink: address, MTU, routes
// (classless static routes when given, else a default route per router).
// The address never expires: the booted system keeps it without a DHCP
// client of its own on this NIC.
func configure(ifname string, nc *netConf) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: nc.addr.IP, Mask: nc.addr.Mask}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("adding %s: %w", addr.IPNet, err)
	}
	if nc.mtu >= 576 {
		if err := netlink.LinkSetMTU(l, nc.mtu); err != nil {
			return fmt.Errorf("setting MTU %d: %w", nc.mtu, err)
		}
	}
	if routes := nc.routes; len(routes) > 0 {
		// RFC 3442: with classless routes, the router option is ignored.
		for _, r := range routes {
			rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: r.Dest, Gw: r.Router}
			if r.Router.IsUnspecified() {
				rt.Gw = nil
				rt.Scope = netlink.SCOPE_LINK
			}
			if err := netlink.RouteReplace(rt); err != nil {
				return fmt.Errorf("route %s via %s: %w", r.Dest, r.Router, err)
			}
		}
		return nil
	}
	for i, gw := range nc.routers {
		rt := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw, Priority: 100 + i}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// NFSOptions are the mount(2) options for the root: NFSv3 over TCP to one
// port for MOUNT and NFS (no rpcbind), no locking, a hard mount that waits
// for the server, 1 MiB reads, and since a generation never changes, long
// attribute caching without close-to-open checks.
func NFSOptions(params boot.Params) string {
	ip, port := params.NFS.Addr().String(), params.NFS.Port()
	return fmt.Sprintf("vers=3,proto=tcp,port=%d,mountport=%d,mountproto=tcp,mountaddr=%s,addr=%s,nolock,hard,timeo=600,retrans=2,rsize=1048576,nocto,actimeo=3600",
		port, port, ip, ip)
}

func mountNFS(params boot.Params) error {
	if err := os.MkdirAll(roDir, 0o755); err != nil {
		return err
	}
	src := params.NFS.Addr().String() + ":" + params.Export
	if err := unix.Mount(src, roDir, "nfs", unix.MS_RDONLY, NFSOptions(params)); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil
		}
		return fmt.Errorf("mount %s: %w", src, err)
	}
	return nil
}

func hasFilesystem(name string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

func stackUnion(params boot.Params, p *initProc) error {
	if err := os.MkdirAll(rwDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", rwDir, "tmpfs", 0, "mode=0755,size="+params.TmpfsSize); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("tmpfs (size=%s): %w", params.TmpfsSize, err)
	}
	upper, work := filepath.Join(rwDir, "upper"), filepath.Join(rwDir, "work")
	os.MkdirAll(upper, 0o755)
	os.MkdirAll(work, 0o755)
	os.MkdirAll(newRoot, 0o755)
	if params.Union == "aufs" {
		if hasFilesystem("aufs") {
			return unix.Mount("none", newRoot, "aufs", 0, "br="+upper+"=rw:"+roDir+"=ro")
		}
		p.say("aufs asked for but this kernel has none: using overlayfs")
	}
	if !hasFilesystem("overlay") {
		return errors.New("the kernel has no overlay filesystem (module overlay not loaded)")
	}
	opts := "lowerdir=" + roDir + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay %s: %w", opts, err)
	}
	return nil
}

// Lease is what /run/bootd/lease.json tells the booted system.
type Lease struct {
	Interface string   `json:"interface"`
	MAC       string   `json:"mac"`
	Address   string   `json:"address"`
	Routers   []string `json:"routers,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	Domain    string   `json:"domain,omitempty"`
	Server    string   `json:"dhcp_server"`
	LeaseSecs int      `json:"lease_seconds"`
	Hostname  string   `json:"hostname,omitempty"`
	NFS       string   `json:"nfs"`
	Export    string   `json:"export"`
}

// handover writes what the booted system needs: the hostname, the lease
// and boot interface under /run/bootd, DNS, and /run drop-ins telling
// systemd-networkd and NetworkManager to leave the boot NIC alone (the
// root filesystem dies the moment it is reconfigured); rsyslog's
// forwarding rule, and what the booted system reports to bootd as.
func handover(ifname, hostname string, me stageReport, nc *netConf, params boot.Params) error {
	mac := me.MAC
	info := Lease{Interface: ifname, MAC: mac,
		Address:   nc.addr.String(),
		Domain:    nc.domain,
		Server:    nc.server,
		LeaseSecs: int(nc.lease / time.Second),
		Hostname:  hostname,
		NFS:       params.NFS.String(), Export: params.Export}
	for _, r := range nc.routers {
		info.Routers = append(info.Routers, r.String())
	}
	var resolv strings.Builder
	if d := nc.domain; d != "" {
		fmt.Fprintf(&resolv, "search %s\n", d)
	}
	for _, d := range nc.dns {
		info.DNS = append(info.DNS, d.String())
		fmt.Fprintf(&resolv, "nameserver %s\n", d)
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	files := map[string]string{
		"/run/bootd/lease.json":     string(b) + "\n",
		"/run/bootd/boot-interface": ifname + "\n",
		"/run/bootd/resolv.conf":    resolv.String(),
		// Images forward their logs to bootd (image.syslog unset):
		// rsyslog includes this file, so it is there even when empty.
		boot.ForwardConf: forwardRule(params.Log),
		"/run/systemd/network/10-bootd-boot-nic.network": "# Written by bootd-init: the root filesystem is on this NIC.\n[Match]\nMACAddress=" + mac +
			"\n\n[Link]\nUnmanaged=yes\n",
		"/run/NetworkManager/conf.d/10-bootd-boot-nic.conf": "# Written by bootd-init: the root filesystem is on this NIC.\n[keyfile]\nunmanaged-devices=mac:" + mac + "\n",
	}
	if params.Report.IsValid() {
		files[boot.ReportEnv] = reportEnv(params.Report, me)
	}
	for name, content := range files {
		os.MkdirAll(filepath.Dir(name), 0o755)
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			return err
		}
	}
	if hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
		// Written into the RAM layer, never to the export.
		if err := writeInRoot("/etc/hostname", hostname+"\n"); err != nil {
			return err
		}
		if err := hostsEntry(hostname); err != nil {
			return err
		}
	}
	if resolv.Len() > 0 {
		// Only where the image has a plain file (or none): a symlink to
		// systemd-resolved's stub is the image's choice.
		if p, err := securejoin.SecureJoin(newRoot, "/etc/resolv.conf"); err == nil {
			if st, err := os.Lstat(p); err != nil || st.Mode().IsRegular() {
				writeInRoot("/etc/resolv.conf", resolv.String())
			}
		}
	}
	if p, err := securejoin.SecureJoin(newRoot, params.Init); err != nil {
		return err
	} else if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("the image has no %s: %w", params.Init, err)
	}
	return nil
}

// forwardRule is rsyslog's rule for boot.ForwardConf.
func forwardRule(log netip.AddrPort) string {
	if !log.IsValid() {
		return "# Written by bootd-init: bootd receives no logs (no bootd.log= on the kernel\n# command line), so this node forwards none.\n"
	}
	// rsyslog takes an IPv6 address bracketed, as AddrPort writes it.
	return "# Written by bootd-init from bootd.log: everything goes to bootd over TCP.\n*.* @@" + log.String() + "\n"
}

// hostsEntry gives the node's name an address in /etc/hosts (Debian's
// 127.0.1.1), as the installer does for a machine with a disk: programs
// that look their own name up at start (rsyslog, sudo) then never ask a
// DNS server, which a cluster network may not have (rsyslog waited 10 s
// on every boot for a resolver that was not there).
func hostsEntry(hostname string) error {
	p, err := securejoin.SecureJoin(newRoot, "/etc/hosts")
	if err != nil {
		return err
	}
	if st, err := os.Lstat(p); err == nil && !st.Mode().IsRegular() {
		return nil // the image's choice
	}
	b, _ := os.ReadFile(p)
	add, ok := hostsWith(string(b), hostname)
	if ok {
		return nil
	}
	return writeInRoot("/etc/hosts", add)
}

// hostsWith returns hosts with a 127.0.1.1 line for hostname, or ok when
// hostname already has a line.
func hostsWith(hosts, hostname string) (string, bool) {
	for _, line := range strings.Split(hosts, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		for _, name := range f[min(1, len(f)):] {
			if name == hostname || strings.HasPrefix(name, hostname+".") {
				return hosts, true
			}
		}
	}
	if hosts != "" && !strings.HasSuffix(hosts, "\n") {
		hosts += "\n"
	}
	return hosts + "127.0.1.1\t" + hostname + "\n", false
}

func writeInRoot(name, content string) error {
	p, err := securejoin.SecureJoin(newRoot, name)
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	return os.WriteFile(p, []byte(content), 0o644)
}

package boot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/bootd/bootd/store"
)

// Params is the contract between the boot plan and bootd's init in the
// initrd: everything the init needs, carried on the kernel command line.
// It is defined here, once; Args writes it and ParseCmdline reads it.
//
//	bootd.nfs=10.0.0.1:2049:/bookworm/3  NFS server, its one port, and the export (generation pinned)
//	bootd.hostname=node01                 the node's hostname
//	BOOTIF=01-52-54-00-12-34-56           the boot NIC (pxelinux IPAPPEND 2 format)
//	bootd.union=overlay                   overlay (default) or aufs
//	bootd.tmpfs=50%                       size of the RAM layer (tmpfs size= syntax)
//	bootd.timeout=300                     seconds of failing before init reboots
//	bootd.init=/sbin/init                 what to exec in the image
//	bootd.debug                           verbose init
//	bootd.report=10.0.0.1:8080            bootd's HTTP server: the init and the booted system POST stage reports to ReportPath
//	bootd.log=10.0.0.1:514                bootd's syslog receiver (TCP): rsyslog forwards there (ForwardConf)
//	bootd.console=10.0.0.1:6666           bootd's netconsole receiver (UDP): the kernel's messages go there
//	bootd.ip=10.0.0.7:255.255.255.0:10.0.0.254:10.0.0.53:52:54:00:12:34:56
//	                                      the address the firmware got by DHCP (iPXE fills it in:
//	                                      address:netmask:gateway:dns:mac, the last three may be empty);
//	                                      the init configures it on the NIC with that MAC and skips DHCP
//
// An IPv6 address is bracketed, as in bootd.nfs=[fd00::1]:2049:/bookworm/3.
// The last three are optional: absent, the node does not report, forward
// its logs or send its console.
type Params struct {
	NFS       netip.AddrPort
	Export    string
	Hostname  string
	BootIF    net.HardwareAddr
	Union     string
	TmpfsSize string
	Timeout   time.Duration
	Init      string
	Debug     bool
	Report    netip.AddrPort
	Log       netip.AddrPort
	Console   netip.AddrPort
	// Addr is bootd.ip, when present and whole; Args never writes it
	// (the firmware does, with the address it holds).
	Addr *StaticAddr
}

// StaticAddr is the address the firmware got, handed to the init.
type StaticAddr struct {
	Prefix  netip.Prefix // address and netmask
	Gateway netip.Addr   // may be invalid: none
	DNS     netip.Addr   // may be invalid: none
	MAC     net.HardwareAddr
}

// parseStaticAddr reads bootd.ip; nil when it says nothing usable, and the
// init then asks DHCP (an iPXE that had no DNS leaves that field empty;
// one that had no address at all writes "::::").
func parseStaticAddr(v string) *StaticAddr {
	f := strings.SplitN(v, ":", 5)
	if len(f) != 5 {
		return nil
	}
	ip, err1 := netip.ParseAddr(f[0])
	mask, err2 := netip.ParseAddr(f[1])
	if err1 != nil || err2 != nil || !ip.Is4() || !mask.Is4() || ip.IsUnspecified() {
		return nil
	}
	ones, bits := net.IPMask(mask.AsSlice()).Size()
	if bits == 0 || ones == 0 {
		return nil
	}
	a := &StaticAddr{Prefix: netip.PrefixFrom(ip, ones)}
	if f[2] != "" {
		if a.Gateway, err1 = netip.ParseAddr(f[2]); err1 != nil || !a.Gateway.Is4() || a.Gateway.IsUnspecified() {
			return nil
		}
	}
	if f[3] != "" {
		if a.DNS, err1 = netip.ParseAddr(f[3]); err1 != nil || !a.DNS.Is4() {
			return nil
		}
	}
	if a.MAC, err1 = net.ParseMAC(f[4]); err1 != nil || len(a.MAC) != 6 {
		return nil
	}
	return a
}

// What the init writes under /run/bootd (which it hands over to the booted
// system) for the image's own configuration to pick up; image preparation
// points rsyslog and bootd-report.service at these paths.
const (
	// ForwardConf is rsyslog's forwarding rule, "*.* @@ADDR:PORT" from
	// bootd.log, or a comment alone when bootd receives no logs.
	ForwardConf = "/run/bootd/rsyslog-forward.conf"
	// ReportEnv exists only when the node reports (bootd.report). It is
	// shell-sourceable and a systemd EnvironmentFile: BOOTD_REPORT
	// (ADDR:PORT, an IPv6 address bracketed), BOOTD_REPORT_HOST (the
	// address unbracketed, for bash's /dev/tcp), BOOTD_REPORT_PORT,
	// BOOTD_MAC, BOOTD_IMAGE, BOOTD_GENERATION and BOOTD_HOSTNAME.
	ReportEnv = "/run/bootd/report.env"
	// ReportPath is where on bootd.report a node POSTs its stage reports.
	ReportPath = "/api/v1/report"
)

// Args returns the parameters as kernel command-line words, in a fixed
// order so that the same plan always gives the same command line.
func (p Params) Args() []string {
	var a []string
	if p.NFS.IsValid() {
		// AddrPort brackets an IPv6 address, as ParseCmdline wants it.
		a = append(a, fmt.Sprintf("bootd.nfs=%s:%s", p.NFS, p.Export))
	}
	if p.Hostname != "" {
		a = append(a, "bootd.hostname="+p.Hostname)
	}
	if len(p.BootIF) == 6 {
		a = append(a, "BOOTIF=01-"+dashed(p.BootIF))
	}
	if p.Union != "" {
		a = append(a, "bootd.union="+p.Union)
	}
	if p.TmpfsSize != "" {
		a = append(a, "bootd.tmpfs="+p.TmpfsSize)
	}
	if p.Timeout > 0 {
		a = append(a, "bootd.timeout="+strconv.Itoa(int(p.Timeout/time.Second)))
	}
	if p.Init != "" {
		a = append(a, "bootd.init="+p.Init)
	}
	if p.Debug {
		a = append(a, "bootd.debug")
	}
	for _, w := range []struct {
		key string
		ap  netip.AddrPort
	}{{"bootd.report", p.Report}, {"bootd.log", p.Log}, {"bootd.console", p.Console}} {
		if usable(w.ap) {
			a = append(a, w.key+"="+w.ap.String())
		}
	}
	return a
}

// usable says whether a node can send to the address: a port, a real
// address, and no zone (a zone names an interface of the machine that
// wrote it, never the node's).
func usable(ap netip.AddrPort) bool {
	return ap.IsValid() && ap.Port() != 0 && !ap.Addr().IsUnspecified() && ap.Addr().Zone() == ""
}

// parseAddrPort reads the value of an optional address word.
func parseAddrPort(key, v string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(v)
	if err == nil && !usable(ap) {
		err = errors.New("not an address a node can send to")
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s=%q: want ADDR:PORT, an IPv6 address bracketed ([fd00::1]:8080): %v", key, v, err)
	}
	return ap, nil
}

// Image returns the image and generation the export names (Plan writes
// /IMAGE/GEN); ok is false for an export of another shape.
func (p Params) Image() (image string, gen int, ok bool) {
	image, g, found := strings.Cut(strings.TrimPrefix(p.Export, "/"), "/")
	if !found || !strings.HasPrefix(p.Export, "/") || store.ValidName(image) != nil {
		return "", 0, false
	}
	gen, err := strconv.Atoi(g)
	if err != nil || gen < 1 || strconv.Itoa(gen) != g {
		return "", 0, false
	}
	return image, gen, true
}

// ParseCmdline reads the parameters from a kernel command line
// (/proc/cmdline). Words it does not know are left for the kernel and the
// image's init. Defaults fill what is absent.
func ParseCmdline(cmdline string) (Params, error) {
	p := Params{Union: "overlay", TmpfsSize: "50%", Timeout: 300 * time.Second, Init: "/sbin/init"}
	for _, w := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "bootd.nfs":
			// ADDR:PORT:/EXPORT; the export starts at the first ":/".
			i := strings.Index(v, ":/")
			if i < 0 {
				return p, fmt.Errorf("bootd.nfs=%q: want SERVER:PORT:/EXPORT", v)
			}
			ap, err := netip.ParseAddrPort(v[:i])
			if err != nil {
				return p, fmt.Errorf("bootd.nfs=%q: want SERVER:PORT:/EXPORT: %v", v, err)
			}
			p.NFS, p.Export = ap, v[i+1:]
		case "bootd.hostname":
			p.Hostname = v
		case "BOOTIF":
			// pxelinux writes 01-aa-bb-cc-dd-ee-ff (01 = Ethernet).
			s := v
			if len(s) == 20 && strings.HasPrefix(s, "01-") {
				s = s[3:]
			}
			hw, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
			if err != nil {
				return p, fmt.Errorf("BOOTIF=%q: want 01-aa-bb-cc-dd-ee-ff", v)
			}
			p.BootIF = hw
		case "bootd.union":
			if v != "overlay" && v != "aufs" {
				return p, fmt.Errorf("bootd.union=%q: want overlay or aufs", v)
			}
			p.Union = v
		case "bootd.tmpfs":
			if v == "" {
				return p, fmt.Errorf("bootd.tmpfs=%q: want a tmpfs size (50%%, 2G)", v)
			}
			p.TmpfsSize = v
		case "bootd.timeout":
			// 0 would make the init give up at its first failed attempt.
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return p, fmt.Errorf("bootd.timeout=%q: want seconds, 1 or more", v)
			}
			p.Timeout = time.Duration(n) * time.Second
		case "bootd.init":
			if !strings.HasPrefix(v, "/") {
				return p, fmt.Errorf("bootd.init=%q: want an absolute path", v)
			}
			p.Init = v
		case "bootd.debug":
			p.Debug = true
		case "bootd.ip":
			p.Addr = parseStaticAddr(v)
		case "bootd.report", "bootd.log", "bootd.console":
			ap, err := parseAddrPort(k, v)
			if err != nil {
				return p, err
			}
			switch k {
			case "bootd.report":
				p.Report = ap
			case "bootd.log":
				p.Log = ap
			default:
				p.Console = ap
			}
		}
	}
	if !p.NFS.IsValid() {
		return p, fmt.Errorf("no bootd.nfs= on the kernel command line: this initrd must be booted by bootd")
	}
	return p, nil
}

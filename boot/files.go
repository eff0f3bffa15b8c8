package boot

import (
	"errors"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// The boot tree is the one namespace of files bootd serves to firmware and
// loaders, over TFTP and over HTTP (under /boot/) alike:
//
//	pxelinux.0, syslinux.efi, undionly.kpxe, ...   loaders (Options.Loaders)
//	pxelinux.cfg/01-52-54-00-12-34-56               a node's pxelinux config, generated
//	pxelinux.cfg/default                            the same for a machine the loader names no MAC for
//	52-54-00-12-34-56.ipxe                          a node's iPXE script, generated
//	images/NAME/GEN/vmlinuz, .../initrd.img         a generation's boot files
//
// The tree is virtual: a requested name is cleaned, then matched against
// these shapes; nothing a client sends is joined to a server path, so no
// name reaches outside it, and errors never carry a server path.

// Errors of BootFile; the servers send their fixed texts.
var (
	ErrNotFound  = errors.New("file not found")
	ErrForbidden = errors.New("access violation")
)

// Kind is what a boot file is for; each marks a boot stage when fetched.
type Kind int

const (
	KindLoader Kind = iota + 1
	KindConfig      // pxelinux config or iPXE script
	KindKernel
	KindInitrd
)

// File is what a boot-tree name stands for.
type File struct {
	Name string // the cleaned name
	Kind Kind
	// Path is the file on this host (loaders, kernels, initrds); Data the
	// generated content (configs, scripts). Exactly one is set.
	Path string
	Data []byte
	// MAC is the node a config or script is for; Image and Generation
	// are set for configs, scripts, kernels and initrds.
	MAC        net.HardwareAddr
	Image      string
	Generation int
}

// Clean turns a requested name into a name in the boot tree, or says that
// it can name nothing there. Loaders send names with a leading "/" or "::"
// (syslinux's "server root"), and old firmware sends backslashes.
func Clean(name string) (string, error) {
	if strings.ContainsRune(name, 0) || len(name) > 255 {
		return "", ErrForbidden
	}
	name = strings.ReplaceAll(name, "\\", "/")
	name = strings.TrimPrefix(name, "::")
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return "", ErrForbidden
		}
	}
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return "", ErrNotFound
	}
	return p, nil
}

// BootFile resolves a requested name (what pixiecore's Booter.ReadBootFile
// is): the loader, the generated config or script, or the generation's
// kernel or initrd it stands for. A config or script pins the generation
// that is current now, and names that generation's files.
func (p *Planner) BootFile(name string) (File, error) { return p.cur.Load().bootFile(name) }

func (o *Options) bootFile(name string) (File, error) {
	name, err := Clean(name)
	if err != nil {
		return File{}, err
	}
	if file, ok := o.Loaders[name]; ok {
		return File{Name: name, Kind: KindLoader, Path: file}, nil
	}
	if cfg, ok := strings.CutPrefix(name, "pxelinux.cfg/"); ok {
		var mac net.HardwareAddr
		if cfg != "default" {
			m, ok := strings.CutPrefix(cfg, "01-")
			if mac = parseDashedMAC(m); !ok || mac == nil {
				return File{}, ErrNotFound
			}
		}
		s, err := o.plan(mac)
		if err != nil {
			return File{}, err
		}
		return File{Name: name, Kind: KindConfig, Data: []byte(s.PXELinuxConfig()), MAC: mac, Image: s.Image, Generation: s.Generation}, nil
	}
	if m, ok := strings.CutSuffix(name, ".ipxe"); ok && !strings.Contains(m, "/") {
		mac := parseDashedMAC(m)
		if mac == nil || o.IPXE == IPXEOff {
			return File{}, ErrNotFound
		}
		s, err := o.plan(mac)
		if err != nil {
			return File{}, err
		}
		return File{Name: name, Kind: KindConfig, Data: []byte(s.IPXEScript(o.bootURL())), MAC: mac, Image: s.Image, Generation: s.Generation}, nil
	}
	if rest, ok := strings.CutPrefix(name, "images/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) != 3 || (parts[2] != "vmlinuz" && parts[2] != "initrd.img") {
			return File{}, ErrNotFound
		}
		gen, err := strconv.Atoi(parts[1])
		if err != nil || strconv.Itoa(gen) != parts[1] || o.Store.Has(parts[0], gen) != nil {
			return File{}, ErrNotFound
		}
		kind := KindKernel
		if parts[2] == "initrd.img" {
			kind = KindInitrd
		}
		return File{Name: name, Kind: kind, Path: filepath.Join(o.Store.BootDir(parts[0], gen), parts[2]), Image: parts[0], Generation: gen}, nil
	}
	return File{}, ErrNotFound
}

// parseDashedMAC reads 52-54-00-12-34-56, as pxelinux and bootd's iPXE
// script names write a MAC; nil if it is not one.
func parseDashedMAC(s string) net.HardwareAddr {
	if len(s) != 17 || strings.Contains(s, ":") {
		return nil
	}
	hw, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil || len(hw) != 6 {
		return nil
	}
	return hw
}

// dashed writes a MAC as parseDashedMAC reads it.
func dashed(mac net.HardwareAddr) string { return strings.ReplaceAll(mac.String(), ":", "-") }

// IPXEMode says which firmware bootd sends down the HTTP path.
type IPXEMode int

const (
	// IPXEOff: every firmware gets pxelinux.0 or syslinux.efi over TFTP.
	IPXEOff IPXEMode = iota
	// IPXEOnly: firmware that already is iPXE (DHCP option 77 "iPXE",
	// QEMU's NIC ROMs and many real ones) gets an iPXE script over HTTP;
	// plain PXE ROMs keep pxelinux/syslinux over TFTP.
	IPXEOnly
	// IPXEChain: plain PXE ROMs are also sent to iPXE first
	// (undionly.kpxe for BIOS, snponly.efi for UEFI, over TFTP), which
	// then asks again as iPXE and boots over HTTP.
	IPXEChain
)

// ParseIPXEMode reads the config words off, ipxe and chain.
func ParseIPXEMode(s string) (IPXEMode, error) {
	switch s {
	case "off":
		return IPXEOff, nil
	case "ipxe":
		return IPXEOnly, nil
	case "chain":
		return IPXEChain, nil
	}
	return IPXEOff, fmt.Errorf("%q: want off, ipxe or chain", s)
}

// The iPXE builds chained to, by firmware (Debian's ipxe package).
const (
	ChainBIOS = "undionly.kpxe"
	ChainEFI  = "snponly.efi"
)

// Client is what a DHCP request says about the firmware that sent it.
type Client struct {
	MAC      net.HardwareAddr
	Firmware Firmware
	// IPXE: option 77 carries "iPXE"; the firmware is iPXE.
	IPXE bool
	// HTTPBoot: option 60 starts with "HTTPClient"; UEFI HTTP Boot, which
	// wants a URL to an EFI program.
	HTTPBoot bool
}

// FirstStage names the file the client's firmware boots: a boot-tree name
// fetched over TFTP, or an http:// URL. It is "" when bootd has nothing
// this firmware can boot (UEFI HTTP Boot without bootd's HTTP path).
func (p *Planner) FirstStage(c Client) string {
	o := p.cur.Load()
	switch {
	case c.Firmware == FirmwareUnsupported:
		return ""
	case c.HTTPBoot:
		if o.IPXE == IPXEOff || c.Firmware != FirmwareEFI64 {
			return ""
		}
		return o.bootURL() + ChainEFI
	case c.IPXE && o.IPXE != IPXEOff:
		return o.bootURL() + dashed(c.MAC) + ".ipxe"
	case o.IPXE == IPXEChain:
		if c.Firmware == FirmwareBIOS {
			return ChainBIOS
		}
		return ChainEFI
	}
	return c.Firmware.Loader()
}

// LoadersServed names the loaders (keys of Options.Loaders) that
// FirstStage may send a firmware to now: pxelinux.0 and syslinux.efi with
// their ldlinux modules unless every PXE ROM is chained to iPXE, and the
// iPXE builds when some firmware is (snponly.efi is also UEFI HTTP Boot's
// first stage). A startup check looks for exactly these files.
func (p *Planner) LoadersServed() []string {
	o := p.cur.Load()
	syslinux := []string{"pxelinux.0", "ldlinux.c32", "syslinux.efi", "ldlinux.e64"}
	switch o.IPXE {
	case IPXEChain:
		return []string{ChainBIOS, ChainEFI}
	case IPXEOnly:
		return append(syslinux, ChainEFI)
	}
	return syslinux
}

// bootURL is where the boot tree is on bootd's HTTP server.
func (o *Options) bootURL() string { return "http://" + o.HTTP.String() + "/boot/" }

// IPXEScript is the iPXE script for the plan: the same kernel, initrd,
// command line and pinned generation as PXELinuxConfig, fetched over HTTP
// from base (the boot tree's URL). The kernel gets the address iPXE holds
// (bootd.ip), so the init needs no second DHCP. A failed fetch is tried
// again every few seconds, for ever: a node whose boot server restarts
// mid-download boots when it is back, with no operator.
func (s Spec) IPXEScript(base string) string {
	q := "?mac=" + dashed(s.MAC)
	var b strings.Builder
	fmt.Fprintf(&b, "#!ipxe\n# bootd: %s boots %s generation %d\n", s.MAC, s.Image, s.Generation)
	b.WriteString(":retry\nimgfree\n")
	// initrd= names the initrd for the kernel's EFI stub; BIOS kernels
	// take it from iPXE and ignore the word.
	fmt.Fprintf(&b, "kernel %s%s%s initrd=initrd.img %s bootd.ip=${ip}:${netmask}:${gateway}:${dns}:${mac} || goto failed\n",
		base, s.Kernel, q, s.Cmdline())
	fmt.Fprintf(&b, "initrd --name initrd.img %s%s%s || goto failed\n", base, s.Initrd, q)
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\necho bootd: fetching the boot files failed; trying again in 5 s\nsleep 5 || goto retry\ngoto retry\n")
	return b.String()
}

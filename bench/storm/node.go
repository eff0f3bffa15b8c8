package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Stages of a simulated boot, in order; each is when the node finished it.
var stages = []string{"dhcp", "loader", "config", "kernel", "initrd", "mount", "booted"}

// node is one simulated machine: its identity is its index, so a storm
// is the same every time it runs.
type node struct {
	i    int
	mac  net.HardwareAddr
	ip   netip.Addr
	xid  dhcpv4.TransactionID
	uuid [16]byte
}

func newNode(i int, base netip.Addr) *node {
	n := &node{i: i}
	n.mac = net.HardwareAddr{0x52, 0x54, 0x00, 0x5a, byte(i >> 8), byte(i)}
	n.ip = base
	for k := 0; k < i; k++ {
		n.ip = n.ip.Next()
	}
	n.xid = dhcpv4.TransactionID{0x57, 0x0a, byte(i >> 8), byte(i)}
	sum := sha256.Sum256(n.mac)
	n.uuid = [16]byte(sum[:16]) // a SMBIOS UUID per machine
	return n
}

// outcome is what happened to one node.
type outcome struct {
	Node    int                      `json:"node"`
	MAC     string                   `json:"mac"`
	IP      string                   `json:"ip"`
	At      map[string]time.Duration `json:"at"` // stage -> since power-on of the storm
	Lost    string                   `json:"lost,omitempty"`
	Path    string                   `json:"path"` // tftp or http
	Retrans int                      `json:"retrans"`
	Bytes   int64                    `json:"bytes"`
	NFS     struct {
		Calls, ExtraLookups, Errors, Retrans, Reconnects int
	} `json:"nfs"`
}

// plan is what every node of a storm does.
type plan struct {
	server    netip.Addr
	fw        firmware
	rec       *recording
	compress  float64 // the recording's gaps are divided by this
	secure    bool    // NFS from ports below 1024
	mountPort int     // MOUNT's port when the command line names none (nfsroot=)
	nfsPort   int     // NFS's port likewise
	prefixLen int     // of the nodes' network (iPXE's ${netmask})
}

// boot plays one node's boot from power-on at t0.
func (p *plan) boot(ctx context.Context, dp *dhcpPort, n *node, t0 time.Time) outcome {
	o := outcome{Node: n.i, MAC: n.mac.String(), IP: n.ip.String(), At: map[string]time.Duration{}}
	mark := func(stage string) { o.At[stage] = time.Since(t0) }
	var f *fetcher
	fail := func(stage string, err error) outcome {
		o.Lost = fmt.Sprintf("%s: %v", stage, err)
		if f != nil {
			o.Bytes = f.bytes
		}
		return o
	}
	d, err := pxeDHCP(ctx, dp, n, p.server, p.fw)
	o.Retrans += d.retrans
	if err != nil {
		return fail("dhcp", err)
	}
	mark("dhcp")
	f = newFetcher(n.ip, d.server)
	defer f.close()

	var entry bootEntry
	if strings.HasPrefix(d.file, "http://") {
		o.Path = "http"
		entry, err = p.httpBoot(ctx, f, n, d.file, mark)
		if err != nil {
			return fail("http", err)
		}
	} else {
		o.Path = "tftp"
		var stage string
		entry, stage, err = p.tftpBoot(f, n, d.file, mark)
		if err != nil {
			return fail(stage, err)
		}
	}

	// The firmware is gone once the kernel runs: so are its connections.
	f.close()
	o.Bytes = f.bytes
	server, port, export, err := nfsRoot(entry.append)
	if err != nil {
		return fail("mount", err)
	}
	mountPort, nfsPort := port, port
	if port == 0 {
		mountPort, nfsPort = p.mountPort, p.nfsPort
	}
	root, c, err := p.mount(ctx, n, server, mountPort, nfsPort, export)
	if err != nil {
		return fail("mount", err)
	}
	defer c.Close()
	mark("mount")
	rp := newReplayer(c, root)
	err = p.replay(ctx, rp)
	o.NFS.Calls, o.NFS.ExtraLookups, o.NFS.Errors = rp.calls, rp.extraLookups, rp.errs
	o.NFS.Retrans, o.NFS.Reconnects = c.retrans, c.reconnects
	if err != nil {
		return fail("nfs", err)
	}
	mark("booted")
	return o
}

// tftpBoot is a PXE ROM and pxelinux (or syslinux.efi): the loader, its
// ldlinux, the configuration search, the kernel and the initrd.
func (p *plan) tftpBoot(f *fetcher, n *node, loader string, mark func(string)) (bootEntry, string, error) {
	var e bootEntry
	if err := f.tftpGet(loader, blksizeROM, nil); err != nil {
		return e, "loader", err
	}
	ld := "ldlinux.c32"
	if strings.HasSuffix(loader, ".efi") {
		ld = "ldlinux.e64"
	}
	if err := f.tftpGet(relative(loader, ld), blksizeLoader, nil); err != nil {
		return e, "loader", err
	}
	mark("loader")
	// pxelinux's search: UUID, 01-MAC, the address in hex ever shorter,
	// default. Each miss is a request the server answers "not found".
	var cfg bytes.Buffer
	found := false
	for _, name := range configNames(n) {
		cfg.Reset()
		if err := f.tftpGet(relative(loader, "pxelinux.cfg/"+name), blksizeLoader, &cfg); err == nil {
			found = true
			break
		} else if !notFound(err) {
			return e, "config", err
		}
	}
	if !found {
		return e, "config", errors.New("no pxelinux configuration")
	}
	e, err := parsePXELinux(cfg.Bytes())
	if err != nil {
		return e, "config", err
	}
	mark("config")
	if err := f.tftpGet(relative(loader, e.kernel), blksizeLoader, nil); err != nil {
		return e, "kernel", err
	}
	mark("kernel")
	if err := f.tftpGet(relative(loader, e.initrd), blksizeLoader, nil); err != nil {
		return e, "initrd", err
	}
	mark("initrd")
	return e, "", nil
}

func notFound(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "not found") || strings.Contains(s, "no such file") || strings.Contains(s, "code: 1")
}

// configNames is pxelinux's configuration search for this node.
func configNames(n *node) []string {
	u := n.uuid
	names := []string{fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]),
		"01-" + strings.ReplaceAll(n.mac.String(), ":", "-")}
	a := n.ip.As4()
	hex := fmt.Sprintf("%02X%02X%02X%02X", a[0], a[1], a[2], a[3])
	for k := len(hex); k > 0; k-- {
		names = append(names, hex[:k])
	}
	return append(names, "default")
}

// httpBoot is iPXE: the script the DHCP answer named, then its kernel and
// initrd; a failed fetch is tried again every 5 s, as bootd's script does.
func (p *plan) httpBoot(ctx context.Context, f *fetcher, n *node, url string, mark func(string)) (bootEntry, error) {
	var script bytes.Buffer
	if err := p.again(ctx, func() error { script.Reset(); return f.httpGet(ctx, url, &script) }, f); err != nil {
		return bootEntry{}, err
	}
	mark("config")
	mask := net.CIDRMask(p.prefixLen, 32)
	vars := map[string]string{"ip": n.ip.String(), "netmask": net.IP(mask).String(), "gateway": "", "dns": "",
		"mac": n.mac.String()}
	e, err := parseIPXE(script.Bytes(), vars)
	if err != nil {
		return e, err
	}
	if err := p.again(ctx, func() error { return f.httpGet(ctx, e.kernel, nil) }, f); err != nil {
		return e, err
	}
	mark("kernel")
	if err := p.again(ctx, func() error { return f.httpGet(ctx, e.initrd, nil) }, f); err != nil {
		return e, err
	}
	mark("initrd")
	return e, nil
}

func (p *plan) again(ctx context.Context, fetch func() error, f *fetcher) error {
	for {
		err := fetch()
		if err == nil || ctx.Err() != nil {
			return err
		}
		f.retries++
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return err
		}
	}
}

// mountTimeout is how long a node's initrd keeps trying to mount its
// root before it gives up (bootd's init: bootd.timeout, 300 s by default;
// initramfs-tools: about 3 minutes).
var mountTimeout = 180 * time.Second

func (p *plan) mount(ctx context.Context, n *node, server netip.Addr, mountPort, nfsPort int, export string) ([]byte, *rpcConn, error) {
	deadline := time.Now().Add(mountTimeout)
	seed := uint32(n.i) << 16
	for {
		root, c, err := p.mountOnce(n, server, mountPort, nfsPort, export, seed)
		if err == nil {
			return root, c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, nil, err
		}
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
}

func (p *plan) mountOnce(n *node, server netip.Addr, mountPort, nfsPort int, export string, seed uint32) ([]byte, *rpcConn, error) {
	mc, err := dialRPC(n.ip, netip.AddrPortFrom(server, uint16(mountPort)), p.secure, seed)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to MOUNT: %w", err)
	}
	root, err := mount(mc, export)
	if err != nil {
		mc.Close()
		return nil, nil, err
	}
	if mountPort == nfsPort {
		return root, mc, nil // one port: bootd's
	}
	mc.Close()
	c, err := dialRPC(n.ip, netip.AddrPortFrom(server, uint16(nfsPort)), p.secure, seed+0x8000)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NFS: %w", err)
	}
	return root, c, nil
}

// replay asks the recording's calls at the recording's pace, divided by
// compress; a node behind its schedule (a slow server) goes on at once,
// as a real node waits on each call it needs.
func (p *plan) replay(ctx context.Context, rp *replayer) error {
	start := time.Now()
	for i, o := range p.rec.ops {
		if wait := time.Duration(float64(p.rec.at[i])/p.compress) - time.Since(start); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := rp.do(o); err != nil {
			return fmt.Errorf("%s %s: %w", o.Proc, o.Path, err)
		}
	}
	return nil
}

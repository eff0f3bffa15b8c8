package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// The loader's part of a node's boot: the boot file the DHCP answer named,
// then what it reads (pxelinux: ldlinux, its config, kernel and initrd;
// iPXE: the script, kernel and initrd), over TFTP or HTTP.

// TFTP block sizes real clients ask for: PXE ROMs fetch the loader with
// 1432 (iPXE) or 1468 (EDK2); pxelinux and syslinux.efi fetch the rest
// with 1408.
const (
	blksizeROM    = 1432
	blksizeLoader = 1408
)

// TFTP timeouts: syslinux's client waits longer at each retry of a
// packet and gives up on a transfer after about two minutes of silence;
// this waits 2 s and tries 12 times with pin/tftp's backoff.
var (
	tftpTimeout = 2 * time.Second
	tftpRetries = 12
)

// fetcher gets one node's files from one server.
type fetcher struct {
	ip      netip.Addr
	server  netip.Addr
	http    *http.Client
	bytes   int64
	retries int // files asked for again after a failure
}

func newFetcher(ip, server netip.Addr) *fetcher {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip.AsSlice()}, Timeout: 30 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1, DisableCompression: true,
		ResponseHeaderTimeout: 60 * time.Second}
	return &fetcher{ip: ip, server: server, http: &http.Client{Transport: tr}}
}

func (f *fetcher) close() { f.http.CloseIdleConnections() }

// tftpGet reads a file over TFTP into w (nil: counted and dropped).
func (f *fetcher) tftpGet(name string, blksize int, w io.Writer) error {
	c, err := tftp.NewClient(netip.AddrPortFrom(f.server, 69).String())
	if err != nil {
		return err
	}
	if err := c.SetLocalAddr(f.ip.String()); err != nil {
		return err
	}
	c.SetBlockSize(blksize)
	c.SetTimeout(tftpTimeout)
	c.SetRetries(tftpRetries)
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return fmt.Errorf("tftp %s: %w", name, err)
	}
	if w == nil {
		w = io.Discard
	}
	n, err := wt.WriteTo(w)
	f.bytes += n
	if err != nil {
		return fmt.Errorf("tftp %s: %w", name, err)
	}
	return nil
}

// httpGet reads a URL into w (nil: counted and dropped).
func (f *fetcher) httpGet(ctx context.Context, url string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return fmt.Errorf("http %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("http %s: %s", url, resp.Status)
	}
	if w == nil {
		w = io.Discard
	}
	n, err := io.Copy(w, resp.Body)
	f.bytes += n
	if err != nil {
		return fmt.Errorf("http %s: %w", url, err)
	}
	return nil
}

// bootEntry is what a loader's configuration says to boot.
type bootEntry struct {
	kernel, initrd string // names as the loader fetches them (relative to its directory, or URLs)
	append         string // the kernel command line
}

// parsePXELinux reads the default entry of a pxelinux configuration.
func parsePXELinux(b []byte) (bootEntry, error) {
	var e, def bootEntry
	var label, want string
	entries := map[string]bootEntry{}
	first := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), f[0]))
		switch strings.ToUpper(f[0]) {
		case "DEFAULT":
			want = arg
		case "LABEL":
			if label != "" {
				entries[label] = e
			}
			label, e = arg, bootEntry{}
			if first == "" {
				first = label
			}
		case "KERNEL", "LINUX":
			e.kernel = arg
		case "INITRD":
			e.initrd = arg
		case "APPEND":
			e.append = arg
		}
	}
	if label != "" {
		entries[label] = e
	}
	if want == "" {
		want = first
	}
	def, ok := entries[want]
	if !ok || def.kernel == "" {
		return def, fmt.Errorf("no kernel in the default entry %q", want)
	}
	if def.initrd == "" {
		for _, a := range strings.Fields(def.append) {
			if v, ok := strings.CutPrefix(a, "initrd="); ok {
				def.initrd = v
			}
		}
	}
	return def, nil
}

// parseIPXE reads the kernel and initrd lines of an iPXE script, with
// iPXE's own variables filled in for this node.
func parseIPXE(b []byte, vars map[string]string) (bootEntry, error) {
	var e bootEntry
	expand := func(s string) string {
		for k, v := range vars {
			s = strings.ReplaceAll(s, "${"+k+"}", v)
		}
		return s
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(expand(sc.Text()))
		if len(f) < 2 {
			continue
		}
		// Options of the command ("--timeout 5000", "-n name") come before
		// the URL.
		args := f[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "-") {
			if strings.Contains(args[0], "=") || len(args) == 1 {
				args = args[1:]
			} else {
				args = args[2:]
			}
		}
		if len(args) == 0 {
			continue
		}
		switch f[0] {
		case "kernel", "chain", "boot":
			if f[0] == "boot" {
				continue
			}
			if e.kernel == "" {
				e.kernel = args[0]
				e.append = strings.Join(args[1:], " ")
			}
		case "initrd", "module":
			if e.initrd == "" {
				e.initrd = args[0]
			}
		}
	}
	if e.kernel == "" || e.initrd == "" {
		return e, errors.New("no kernel and initrd in the iPXE script")
	}
	return e, nil
}

// nfsRoot finds the NFS root a command line names: bootd's bootd.nfs=
// (server:port:export) or the kernel's nfsroot= (server:export), whose
// port the caller knows.
func nfsRoot(cmdline string) (server netip.Addr, port int, export string, err error) {
	for _, a := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(a, "bootd.nfs="); ok {
			i := strings.Index(v, ":/")
			if i < 0 {
				break
			}
			ap, err := netip.ParseAddrPort(v[:i])
			if err != nil {
				return server, 0, "", fmt.Errorf("bootd.nfs=%s: %w", v, err)
			}
			return ap.Addr(), int(ap.Port()), v[i+1:], nil
		}
		if v, ok := strings.CutPrefix(a, "nfsroot="); ok {
			v, _, _ = strings.Cut(v, ",")
			host, exp, ok := strings.Cut(v, ":")
			if !ok {
				break
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return server, 0, "", fmt.Errorf("nfsroot=%s: %w", v, err)
			}
			return ip, 0, exp, nil
		}
	}
	return server, 0, "", fmt.Errorf("no NFS root on the command line %q", cmdline)
}

// relative resolves a name a loader read from its configuration: loaders
// fetch relative to their own directory.
func relative(loader, name string) string {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "://") {
		return strings.TrimPrefix(name, "/")
	}
	if d := path.Dir(loader); d != "." {
		return d + "/" + name
	}
	return name
}

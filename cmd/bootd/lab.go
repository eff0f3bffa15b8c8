package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/lab"
)

const labUsage = `usage:
  bootd lab up [--nodes N] [--masters 1|2] [--firmware bios|uefi|uefi-native|mixed] [--site-dhcp dnsmasq|isc|kea|none] [--boot chain|ipxe|off] [--image NAME] [--suite trixie|bookworm|bookworm,trixie] [--dir DIR]
  bootd lab matrix [--budget 60m] [--only VALUE,...] [--parallel N] [--timeout 6m] [--rotation N] [--format text|markdown|json] [--dir DIR]
                                        every boot path, one node each: firmware (bios, uefi, uefi-native) x site DHCP
                                        (dnsmasq, isc, kea, none) x image (bookworm, trixie); --only keeps the cells with
                                        these values; --rotation N: the 4 cells of rotation N, which cover every value
  bootd lab status [--dir DIR]
  bootd lab console NODE [--dir DIR]
  bootd lab reboot NODE [--dir DIR]     a hard reset, no shutdown
  bootd lab poweroff NODE [--dir DIR]   the plug pulled
  bootd lab down [--dir DIR]`

func runLab(args []string) error {
	if len(args) == 0 {
		return errors.New(labUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("bootd lab "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), labUsage); fs.PrintDefaults() }
	dir := fs.String("dir", "/var/lib/bootd-lab", "where the lab keeps its state, image cache, logs and consoles")
	nodes := fs.Int("nodes", 2, "number of QEMU nodes")
	masters := fs.Int("masters", 1, "number of masters: 2 share the service address "+lab.ServiceIP+" through keepalived (VRRP), master 2 serving master 1's image")
	firmware := fs.String("firmware", "mixed", "bios, uefi, uefi-native (OVMF's own PXE, the NIC without iPXE ROM), or mixed (odd nodes BIOS with e1000, even nodes UEFI with virtio-net)")
	siteDHCP := fs.String("site-dhcp", "dnsmasq", "the site's DHCP server beside bootd (proxy mode): dnsmasq, isc (ISC dhcpd), kea; none: bootd is the DHCP server (full mode)")
	image := fs.String("image", "", "image to boot, built if missing (default: the suite's name)")
	suite := fs.String("suite", "trixie", "Debian suite for a missing image: trixie (13) or bookworm (12); bookworm,trixie: nodes take the suites in turn")
	bootMode := fs.String("boot", "chain", "bootd's http.boot: chain (every firmware to iPXE, kernel and initrd over HTTP), ipxe (only iPXE firmware over HTTP), off (all TFTP)")
	timeout := fs.Duration("timeout", 6*time.Minute, "per node, power-on to multi-user")
	budget := fs.Duration("budget", 60*time.Minute, "matrix: no cell starts after this long")
	only := fs.String("only", "", "matrix: comma-separated values (e.g. uefi-native,bookworm); only cells with them run")
	parallel := fs.Int("parallel", 2, "matrix: nodes booting at once (2 CPUs: 2)")
	rotation := fs.Int("rotation", -1, "matrix: run rotation N (4 cells covering every value of every axis) instead of every cell")
	format := fs.String("format", "text", "matrix: the table as text, markdown or json")
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if args = fs.Args(); len(args) > 0 {
			pos, args = append(pos, args[0]), args[1:]
		}
	}
	labDir := filepath.Join(*dir, "lab")
	switch sub {
	case "up":
		if *firmware != "mixed" && !slices.Contains(lab.Firmwares, lab.Firmware(*firmware)) {
			return fmt.Errorf("--firmware %q: want bios, uefi, uefi-native or mixed", *firmware)
		}
		site, err := lab.ParseSiteDHCP(*siteDHCP)
		if err != nil {
			return fmt.Errorf("--site-dhcp: %w", err)
		}
		if _, err := boot.ParseIPXEMode(*bootMode); err != nil {
			return fmt.Errorf("--boot %w", err)
		}
		if *nodes < 1 || *nodes > 200 {
			return fmt.Errorf("--nodes %d: want 1 to 200", *nodes)
		}
		if *masters != 1 && *masters != 2 {
			return fmt.Errorf("--masters %d: want 1 or 2", *masters)
		}
		if l, err := lab.Load(labDir); err == nil && len(l.Procs) > 0 {
			fmt.Println("lab: taking down the previous lab first")
			l.Down()
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c, err := lab.UpCluster(ctx, lab.Options{Dir: *dir, Nodes: *nodes, Firmware: *firmware, Image: *image,
			Suite: *suite, SiteDHCP: site, Bootd: self, Out: os.Stdout, Timeout: *timeout, Boot: *bootMode, Masters: *masters})
		if err != nil {
			return err
		}
		c.Wait(ctx)
		fmt.Println()
		c.Table(os.Stdout)
		fmt.Printf("\nThe lab keeps running: 'bootd lab console NODE' to log in (root, password %q), 'bootd lab down' to remove it.\nLogs: %s (bootd.log, dnsmasq.log, NODE.console); node syslog: %s\n",
			lab.LabPassword, labDir, filepath.Join(*dir, "state", "logs"))
		for _, r := range c.Reports {
			if r.Result != "ok" {
				return fmt.Errorf("%s did not reach multi-user (%s)", r.Name, r.Result)
			}
		}
		return nil
	case "matrix":
		var vals []string
		if *only != "" {
			vals = strings.Split(*only, ",")
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return lab.RunMatrix(ctx, lab.MatrixOptions{Dir: *dir, Bootd: self, Out: os.Stderr,
			Budget: *budget, Parallel: *parallel, Timeout: *timeout}, *rotation, vals, *format, os.Stdout)
	case "status":
		l, err := lab.Load(labDir)
		if err != nil {
			return fmt.Errorf("no lab in %s", *dir)
		}
		for _, p := range l.Procs {
			state := "running"
			if err := p.Verify(); err != nil {
				state = err.Error()
			}
			fmt.Printf("%-10s pid %-8d %s\n", p.Name, p.PID, state)
		}
		return nil
	case "console":
		if len(pos) != 1 {
			return errors.New("usage: bootd lab console NODE")
		}
		l, err := lab.Load(labDir)
		if err != nil {
			return fmt.Errorf("no lab in %s", *dir)
		}
		n, ok := l.Node(pos[0])
		if !ok {
			return fmt.Errorf("no node %q in the lab", pos[0])
		}
		return console(n)
	case "reboot", "poweroff":
		if len(pos) != 1 {
			return fmt.Errorf("usage: bootd lab %s NODE", sub)
		}
		l, err := lab.Load(labDir)
		if err != nil {
			return fmt.Errorf("no lab in %s", *dir)
		}
		if sub == "reboot" {
			err = l.Reset(pos[0])
		} else {
			err = l.PowerOff(pos[0])
		}
		if err != nil {
			return err
		}
		fmt.Printf("lab: %s: %s (no shutdown: a hard %s)\n", pos[0], sub, map[string]string{"reboot": "reset", "poweroff": "power-off"}[sub])
		return nil
	case "down":
		l, err := lab.Load(labDir)
		if err != nil {
			fmt.Println("lab: nothing to take down")
			return nil
		}
		if err := l.Down(); err != nil {
			return err
		}
		fmt.Println("lab: down")
		return nil
	}
	return errors.New(labUsage)
}

// console attaches the terminal to a node's serial console; Ctrl-] leaves.
func console(n *lab.Node) error {
	c, err := net.Dial("unix", n.Socket)
	if err != nil {
		return fmt.Errorf("node %s console: %w", n.Name, err)
	}
	defer c.Close()
	if term.IsTerminal(int(os.Stdin.Fd())) {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err == nil {
			defer term.Restore(int(os.Stdin.Fd()), old)
		}
	}
	fmt.Fprintf(os.Stderr, "Connected to %s's serial console; Ctrl-] leaves.\r\n", n.Name)
	go io.Copy(os.Stdout, c)
	buf := make([]byte, 256)
	for {
		k, err := os.Stdin.Read(buf)
		if err != nil {
			return nil
		}
		for i := 0; i < k; i++ {
			if buf[i] == 0x1d {
				return nil
			}
		}
		if _, err := c.Write(buf[:k]); err != nil {
			return err
		}
	}
}

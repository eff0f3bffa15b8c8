package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/lab"
)

// labDir is the lab's --dir, which every lab verb takes.
type labDir struct{ dir string }

// state is where the lab keeps its processes, logs and consoles.
func (d *labDir) state() string { return filepath.Join(d.dir, "lab") }

func (d *labDir) load() (*lab.Lab, error) {
	l, err := lab.Load(d.state())
	if err != nil {
		return nil, fmt.Errorf("no lab in %s", d.dir)
	}
	return l, nil
}

func newLabCmd() *cobra.Command {
	d := &labDir{}
	c := &cobra.Command{
		Use:   "lab",
		Short: "a QEMU cluster in network namespaces on this machine: up, status, console, reboot, poweroff, down",
		Long: `A test cluster on this machine: a master network namespace running bootd,
and QEMU nodes (TCG, no KVM needed) that boot from it over a bridge.

The lab writes its own config, DIR/bootd.yaml (--dir), for the bootd it runs;
lab verbs do not read --config. Point the other verbs at the lab's
config to look inside, e.g. bootd nodes list --config /var/lib/bootd-lab/bootd.yaml.`,
	}
	c.PersistentFlags().StringVar(&d.dir, "dir", "/var/lib/bootd-lab", "`DIR` where the lab keeps its state, image cache, logs and consoles")
	c.MarkPersistentFlagDirname("dir")
	c.AddCommand(labUpCmd(d), labMatrixCmd(d), labStatusCmd(d), labConsoleCmd(d),
		labPowerCmd("reboot", "reset a node: a hard reset, no shutdown", d.load, (*lab.Lab).Reset),
		labPowerCmd("poweroff", "power a node off: the plug pulled, no shutdown", d.load, (*lab.Lab).PowerOff),
		labDownCmd(d))
	return c
}

func labStatusCmd(d *labDir) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "the lab's processes and whether each still runs",
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := d.load()
			if err != nil {
				return err
			}
			for _, p := range l.Procs {
				state := "running"
				if err := p.Verify(); err != nil {
					state = err.Error()
				}
				fmt.Printf("%-10s pid %-8d %s\n", p.Name, p.PID, state)
			}
			return nil
		},
	}
}

func labConsoleCmd(d *labDir) *cobra.Command {
	return &cobra.Command{
		Use:   "console NODE",
		Short: "attach the terminal to a node's serial console (Ctrl-] leaves)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := d.load()
			if err != nil {
				return err
			}
			n, ok := l.Node(args[0])
			if !ok {
				return fmt.Errorf("no node %q in the lab", args[0])
			}
			return console(n)
		},
	}
}

func labDownCmd(d *labDir) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "stop the lab's nodes and master and remove its namespaces",
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(d.state())
			if err != nil {
				fmt.Println("lab: nothing to take down")
				return nil
			}
			if err := l.Down(); err != nil {
				return err
			}
			fmt.Println("lab: down")
			return nil
		},
	}
}

// labPowerCmd is a verb that acts on one node's power, as its plug or
// reset button would: the node gets no shutdown.
func labPowerCmd(verb, short string, load func() (*lab.Lab, error), act func(*lab.Lab, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NODE",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := load()
			if err != nil {
				return err
			}
			if err := act(l, args[0]); err != nil {
				return err
			}
			fmt.Printf("lab: %s: %s (no shutdown)\n", args[0], verb)
			return nil
		},
	}
}

func labUpCmd(d *labDir) *cobra.Command {
	o := lab.Options{Nodes: 2, Masters: 1, Firmware: "mixed", Suite: "trixie", Boot: "chain", Timeout: 6 * time.Minute}
	siteDHCP := "dnsmasq"
	c := &cobra.Command{
		Use:   "up",
		Short: "start a lab: bootd in a master namespace, QEMU nodes booting from it",
		Long: `Start a lab (taking down the one there first): bootd in a master namespace,
an image (built on first run, then cached in --dir), and --nodes QEMU nodes
that boot from it. Waits until every node reaches multi-user or --timeout,
prints a table of the boots, and leaves the lab running; exits 1 when a
node did not boot.`,
		Example: "  bootd lab up --nodes 4 --firmware uefi --suite bookworm",
		Args: cobra.MatchAll(noArgs, func(cmd *cobra.Command, args []string) error {
			site, err := lab.ParseSiteDHCP(siteDHCP)
			if err != nil {
				return fmt.Errorf("--site-dhcp: %w", err)
			}
			o.SiteDHCP = site
			if _, err := boot.ParseIPXEMode(o.Boot); err != nil {
				return fmt.Errorf("--boot %w", err)
			}
			if o.Nodes < 1 || o.Nodes > 200 {
				return fmt.Errorf("--nodes %d: want 1 to 200", o.Nodes)
			}
			if o.Masters != 1 && o.Masters != 2 {
				return fmt.Errorf("--masters %d: want 1 or 2", o.Masters)
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Dir = d.dir
			return labUp(o)
		},
	}
	fs := c.Flags()
	fs.IntVar(&o.Nodes, "nodes", o.Nodes, "number of QEMU nodes (1 to 200)")
	fs.IntVar(&o.Masters, "masters", o.Masters, "number of masters: 2 share the service address "+lab.ServiceIP+" through keepalived (VRRP), master 2 serving master 1's image")
	choiceVar(c, fs, &o.Firmware, "firmware", "bios, uefi, uefi-native (OVMF's own PXE, the NIC without an iPXE ROM), or mixed (odd nodes BIOS with e1000, even nodes UEFI with virtio-net)",
		"bios", "uefi", "uefi-native", "mixed")
	choiceVar(c, fs, &siteDHCP, "site-dhcp", "the site's DHCP server beside bootd (proxy mode): dnsmasq, isc (ISC dhcpd), kea; none: bootd is the DHCP server (full mode)",
		"dnsmasq", "isc", "kea", "none")
	fs.StringVar(&o.Image, "image", "", "image `NAME` to boot, built if missing (default: the suite's name)")
	choiceVar(c, fs, &o.Suite, "suite", "Debian suite of an image that is missing: trixie (13) or bookworm (12); bookworm,trixie: the nodes take the suites in turn",
		"trixie", "bookworm", "bookworm,trixie", "trixie,bookworm")
	choiceVar(c, fs, &o.Boot, "boot", "bootd's http.boot: chain (every firmware to iPXE, kernel and initrd over HTTP), ipxe (only iPXE firmware over HTTP), off (all TFTP)", "chain", "ipxe", "off")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "per node, power-on to multi-user")
	return c
}

func labMatrixCmd(d *labDir) *cobra.Command {
	o := lab.MatrixOptions{Budget: 60 * time.Minute, Parallel: 2, Timeout: 6 * time.Minute}
	var only []string
	rotation, format := -1, "text"
	c := &cobra.Command{
		Use:   "matrix",
		Short: "boot every path once: firmware x site DHCP server x image, one node each, and print the table",
		Long: `Boot every path a node can take, one QEMU node each: firmware (bios: SeaBIOS
with QEMU's iPXE ROM; uefi: OVMF with the iPXE ROM; uefi-native: OVMF's own
PXE, no ROM) x site DHCP server (dnsmasq, isc, kea; none: bootd in full DHCP
mode) x image (bookworm, trixie): 24 cells. Images are built once in DIR;
each site DHCP server gets its own lab; --parallel nodes boot at once and no
cell starts after --budget. Prints one line per cell (result, power-on to
login: on the console, power-on to up in bootd's records, the path the
kernel came by) and exits 1 naming every cell that failed.`,
		Example: `  bootd lab matrix --format markdown
  bootd lab matrix --only uefi-native,kea
  bootd lab matrix --rotation 3`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o.Dir, o.Bootd, o.Out = d.dir, self, os.Stderr
			ctx, stop := signalContext()
			defer stop()
			return lab.RunMatrix(ctx, o, rotation, only, format, os.Stdout)
		},
	}
	fs := c.Flags()
	fs.DurationVar(&o.Budget, "budget", o.Budget, "no cell starts after this long")
	fs.StringSliceVar(&only, "only", nil, "run only the cells with these `VALUE`s (e.g. uefi-native,bookworm; on each axis named)")
	fs.IntVar(&o.Parallel, "parallel", o.Parallel, "nodes booting at once (two TCG nodes fill 2 CPUs)")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "per node, power-on to multi-user")
	fs.IntVar(&rotation, "rotation", rotation, "run rotation `N`: 4 cells that take every value of every axis (-1: every cell)")
	choiceVar(c, fs, &format, "format", "the table as text, markdown or json", "text", "markdown", "json")
	return c
}

func labUp(o lab.Options) error {
	labDir := filepath.Join(o.Dir, "lab")
	if l, err := lab.Load(labDir); err == nil && len(l.Procs) > 0 {
		fmt.Println("lab: taking down the previous lab first")
		l.Down()
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o.Bootd, o.Out = self, os.Stdout
	ctx, stop := signalContext()
	defer stop()
	c, err := lab.UpCluster(ctx, o)
	if err != nil {
		return err
	}
	c.Wait(ctx)
	fmt.Println()
	c.Table(os.Stdout)
	fmt.Printf("\nThe lab keeps running: 'bootd lab console NODE' to log in (root, password %q), 'bootd lab down' to remove it.\nLogs: %s (bootd.log, dnsmasq.log, NODE.console); node syslog: %s\n",
		lab.LabPassword, labDir, filepath.Join(o.Dir, "state", "logs"))
	for _, r := range c.Reports {
		if r.Result != "ok" {
			return fmt.Errorf("%s did not reach multi-user (%s)", r.Name, r.Result)
		}
	}
	return nil
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

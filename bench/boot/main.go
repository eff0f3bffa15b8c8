// Command bootrace is the QEMU side of bench/boot.sh: it times one
// node's power-on to its serial "login:" prompt, booted four ways from
// one image tree, one boot at a time, in rounds:
//
//   - bootd: `bootd serve` in proxy mode beside the site's dnsmasq, in the
//     lab's own namespaces (lab.Up, StartSiteDHCP, bootd serve, StartNode:
//     what `bootd lab up --nodes 1` does), on its HTTP path;
//   - bootd-tftp: the same with http.boot: off (pxelinux.0 or syslinux.efi
//     over TFTP, the path of firmware that is not iPXE);
//   - peer: the hand-wired stack (dnsmasq proxy-DHCP + TFTP, pxelinux or
//     syslinux.efi, Debian's initramfs-tools NFS root, rpcbind +
//     nfs-ganesha), in namespaces of its own on 10.214.0.0/24, the node
//     started by the same lab.StartNode;
//   - limit: no network boot, the image on a virtio disk, QEMU
//     -kernel/-initrd, otherwise the same QEMU node.
//
// boot.sh installs packages and builds what the peer and the limit
// boot (initrds, TFTP tree, disk image); this program only starts servers
// and nodes, times them, and cleans up by PID (lab.Lab.Down).
//
//	bootrace prepare -dir DIR -bootd BIN        image + bootd initrd (lab.Prepare)
//	bootrace run -dir DIR -bootd BIN -out OUT ...
//	bootrace cleanup -out OUT -dir DIR          take down whatever a killed run left
//	bootrace table -out OUT                     the table again, from OUT/raw.jsonl
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bootd/bootd/lab"
)

// The peer's network: its own namespaces, its own addresses (the lab's
// are 10.213.0.0/24; these never leave the peer's namespaces either).
const (
	peerMasterIP = "10.214.0.1"
	peerSiteIP   = "10.214.0.2"
	peerNet      = "10.214.0.0"
	peerLow      = "10.214.0.100"
	peerHigh     = "10.214.0.199"

	// Namespace name prefixes (lab.Lab.NS adds -sw, -site, -master).
	bootdLab = "brace-bd"
	peerLab  = "brace-peer"
	limitLab = "brace-limit"

	// The bootd lab's config (lab.Prepare, Nodes: 1) knows node01 by this MAC.
	bootdMAC = "52:54:00:bd:00:01"
	peerMAC  = "52:54:00:be:00:01"
	limitMAC = "52:54:00:bf:00:01"

	ganeshaMntPort = "20048"
)

var systems = []string{"bootd", "bootd-tftp", "peer", "limit"}

func main() {
	log := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%s] bootrace: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(f, a...))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bootrace prepare|run|cleanup [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "prepare":
		err = prepare(os.Args[2:], log)
	case "run":
		err = runAll(os.Args[2:], log)
	case "cleanup":
		err = cleanupCmd(os.Args[2:], log)
	case "table":
		err = tableCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		log("FATAL: %v", err)
		os.Exit(1)
	}
}

type logf func(string, ...any)

func prepare(args []string, log logf) error {
	fs := flag.NewFlagSet("prepare", flag.ExitOnError)
	dir := fs.String("dir", "", "the bootd lab's --dir")
	bootd := fs.String("bootd", "", "bootd binary")
	suite := fs.String("suite", "bookworm", "Debian release of the image")
	fs.Parse(args)
	if *dir == "" || *bootd == "" {
		return errors.New("prepare: -dir and -bootd are required")
	}
	log("preparing the bootd lab in %s (image built if missing, initrd always)", *dir)
	cfg, err := lab.Prepare(context.Background(), lab.Options{Dir: *dir, Name: bootdLab, Nodes: 1, Firmware: "bios",
		Suite: *suite, Bootd: *bootd, Out: os.Stderr})
	if err != nil {
		return err
	}
	fmt.Println(cfg)
	return nil
}

// config of a run.
type config struct {
	dir, bootd, out, tftp, tree string
	limitKernel, limitInitrd    string
	limitDisk                   string
	rounds                      int
	firmwares, systems          []string
	timeout                     time.Duration
	append                      string
	record                      string // nfs.record of the bootd boots, cut at login:, gzipped here
	log                         logf
}

// result of one boot.
type result struct {
	Round    int               `json:"round"`
	Firmware string            `json:"firmware"`
	System   string            `json:"system"`
	Seconds  float64           `json:"seconds"` // power-on to "login:"; NaN if it never came
	Result   string            `json:"result"`
	Foreign  int               `json:"foreign_qemu"` // other QEMUs seen on the machine during the boot
	OtherCPU float64           `json:"other_cpu"`    // CPU cores busy with anything but the node's QEMU, on average
	Console  string            `json:"console"`
	Stages   map[string]string `json:"stages,omitempty"` // the servers' records (bootd's, the peer's dnsmasq log), seconds after power-on
	Guest    *guest            `json:"guest,omitempty"`  // the node's own clock
	Start    time.Time         `json:"start"`
}

func runAll(args []string, log logf) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var c config
	var fws, syss string
	fs.StringVar(&c.dir, "dir", "", "the bootd lab's --dir (prepared)")
	fs.StringVar(&c.bootd, "bootd", "", "bootd binary")
	fs.StringVar(&c.out, "out", "/var/tmp/bootrace", "output directory")
	fs.StringVar(&c.tftp, "tftp", "", "the peer's TFTP root")
	fs.StringVar(&c.tree, "tree", "", "the image root tree the peer exports")
	fs.StringVar(&c.limitKernel, "limit-kernel", "", "the limit's kernel")
	fs.StringVar(&c.limitInitrd, "limit-initrd", "", "the limit's initramfs-tools initrd (local root)")
	fs.StringVar(&c.limitDisk, "limit-disk", "", "the limit's pristine ext4 disk image (copied for each boot)")
	fs.StringVar(&c.append, "append", "console=tty0 console=ttyS0,115200n8 quiet", "kernel arguments the peer and the limit add (bootd's lab uses these)")
	fs.IntVar(&c.rounds, "rounds", 2, "rounds")
	fs.StringVar(&fws, "firmwares", "bios,uefi", "firmwares")
	fs.StringVar(&syss, "systems", "bootd,bootd-tftp,peer,limit", "systems, in the order booted within a round")
	fs.DurationVar(&c.timeout, "timeout", 6*time.Minute, "per boot, power-on to login:")
	fs.StringVar(&c.record, "record", "", "record the NFS calls of a bootd boot up to login: into this file (gzip JSON lines, bench/storm's replay)")
	fs.Parse(args)
	c.firmwares = strings.Split(fws, ",")
	c.systems = strings.Split(syss, ",")
	c.log = log
	for _, s := range c.systems {
		if !slices.Contains(systems, s) {
			return fmt.Errorf("unknown system %q", s)
		}
	}
	for _, d := range []string{"consoles", "logs"} {
		if err := os.MkdirAll(filepath.Join(c.out, d), 0o755); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	raw, err := os.Create(filepath.Join(c.out, "raw.tsv"))
	if err != nil {
		return err
	}
	defer raw.Close()
	fmt.Fprintln(raw, "round\tfirmware\tsystem\tseconds\tresult\tforeign_qemu\tother_cpu\tconsole")
	rawJSON, err := os.Create(filepath.Join(c.out, "raw.jsonl"))
	if err != nil {
		return err
	}
	defer rawJSON.Close()

	start := time.Now()
	var results []result
	for r := 1; r <= c.rounds; r++ {
		for _, fw := range c.firmwares {
			for _, sys := range c.systems {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				log("round %d/%d, %s, %s: setting up", r, c.rounds, fw, sys)
				res := c.one(ctx, r, fw, sys)
				results = append(results, res)
				fmt.Fprintf(raw, "%d\t%s\t%s\t%.1f\t%s\t%d\t%.2f\t%s\n", res.Round, res.Firmware, res.System, res.Seconds, res.Result, res.Foreign, res.OtherCPU, res.Console)
				b, _ := json.Marshal(struct {
					result
					Seconds *float64 `json:"seconds"`
				}{res, finite(res.Seconds)})
				rawJSON.Write(append(b, '\n'))
				log("round %d/%d, %s, %s: %s %.1fs", r, c.rounds, fw, sys, res.Result, res.Seconds)
			}
		}
	}
	var tbl bytes.Buffer
	table(&tbl, c, results)
	fmt.Fprintf(&tbl, "\n%d boots in %v\n", len(results), time.Since(start).Round(time.Second))
	os.Stdout.Write(tbl.Bytes())
	return os.WriteFile(filepath.Join(c.out, "table.txt"), tbl.Bytes(), 0o644)
}

func finite(f float64) *float64 {
	if math.IsNaN(f) {
		return nil
	}
	return &f
}

// one boots one node and takes down everything started for it.
func (c config) one(ctx context.Context, round int, fw, sys string) result {
	res := result{Round: round, Firmware: fw, System: sys, Seconds: math.NaN()}
	name := fmt.Sprintf("r%d-%s-%s", round, fw, sys)
	var l *lab.Lab
	var node *lab.Node
	var err error
	switch sys {
	case "bootd":
		l, node, err = c.upBootd(fw, "chain")
	case "bootd-tftp":
		l, node, err = c.upBootd(fw, "off")
	case "peer":
		l, node, err = c.upPeer(fw)
	case "limit":
		l, node, err = c.upLimit(fw)
	}
	if l != nil {
		defer func() {
			l.Out = io.Discard
			if err := l.Down(); err != nil {
				c.log("%s: taking down: %v", name, err)
			}
			c.keepLogs(l, name)
		}()
	}
	if err != nil {
		res.Result = "setup failed: " + err.Error()
		return res
	}
	res.Start = startOf(node)
	res.Console = filepath.Join(c.out, "consoles", name+".console")
	own := c.ownQEMU(l, node.Name)
	busy0, total0 := cpuStat()
	q0 := procCPU(own)
	var marks []marker
	if sys == "peer" {
		pxe := filepath.Join(l.Dir, "pxe-dnsmasq.log")
		marks = []marker{
			{file: pxe, stage: "dhcp", match: func(line string) bool {
				return strings.Contains(line, "PXE(m0) "+peerMAC+" proxy")
			}},
			{file: pxe, stage: "fetched", match: func(line string) bool {
				return strings.Contains(line, "dnsmasq-tftp") && strings.Contains(line, "sent ") && strings.Contains(line, "/initrd.img ")
			}},
		}
	}
	d, foreign, seen, err := watch(ctx, node, res.Start, c.timeout, res.Console, own, marks)
	busy1, total1 := cpuStat()
	if q1 := procCPU(own); total1 > total0 && q1 >= q0 {
		// The machine's ticks and the process's are counted apart: on an
		// otherwise idle machine the difference may come out below zero.
		other := (float64(busy1) - float64(busy0) - float64(q1-q0)) * float64(runtime.NumCPU()) / float64(total1-total0)
		res.OtherCPU = math.Max(other, 0)
	}
	res.Foreign = foreign
	if err != nil {
		res.Result = err.Error()
	} else {
		res.Seconds = d.Seconds()
		res.Result = "ok"
	}
	res.Stages = map[string]string{}
	if strings.HasPrefix(sys, "bootd") {
		res.Stages = bootdStages(ctx, l, node.MAC, res.Start)
	}
	for k, v := range seen {
		res.Stages[k] = fmt.Sprintf("%.1f", v.Seconds())
	}
	if err == nil && c.record != "" && strings.HasPrefix(sys, "bootd") {
		if err := keepRecording(c.record, res.Start.Add(d)); err != nil {
			c.log("%s: the NFS recording: %v", name, err)
		}
	}
	if err == nil {
		g, err := guestStages(node, res.Start)
		if err != nil {
			c.log("%s: reading the node's own clock: %v", name, err)
		}
		res.Guest = g
	}
	return res
}

// keepRecording writes the calls bootd recorded (nfs.record) before the
// login prompt came, gzipped: a boot's calls, not the login's after it.
func keepRecording(out string, until time.Time) error {
	raw, err := os.ReadFile(out + ".raw")
	if err != nil {
		return err
	}
	var kept bytes.Buffer
	z := gzip.NewWriter(&kept)
	n := 0
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var o struct {
			T time.Time `json:"t"`
		}
		if len(line) == 0 || json.Unmarshal(line, &o) != nil || o.T.After(until) {
			continue
		}
		z.Write(append(line, '\n'))
		n++
	}
	if err := z.Close(); err != nil {
		return err
	}
	if n == 0 {
		return errors.New("no calls recorded before login:")
	}
	return os.WriteFile(out, kept.Bytes(), 0o644)
}

// guest is what a node's systemd says about its boot, in seconds after
// power-on: the same clock for every system, where the servers' logs
// differ (bootd records stages; dnsmasq logs some; a local disk has none).
type guest struct {
	// Kernel is when the kernel started: the host's clock at the moment
	// the node printed its /proc/uptime, less that uptime.
	Kernel float64 `json:"kernel"`
	// Root is when systemd started on the real root: the root file
	// system mounted, the initrd (bootd's init, initramfs-tools) done.
	Root float64 `json:"root"`
	// MultiUser is when multi-user.target became active.
	MultiUser float64 `json:"multi_user"`
	// Failed is how many units had failed by then (a root that is not
	// writable, a service that waits for something absent).
	Failed int `json:"failed"`
}

// guestStages logs in on the node's console and reads its boot timestamps.
func guestStages(n *lab.Node, t0 time.Time) (*guest, error) {
	if err := n.Login("root", lab.LabPassword, 2*time.Minute); err != nil {
		return nil, err
	}
	// The round trip through the serial line takes a few hundred ms: the
	// uptime was printed between the two host readings.
	var kernel time.Time
	var up float64
	for i := 0; i < 3; i++ {
		before := time.Now()
		out, err := n.Run("cat /proc/uptime", 30*time.Second)
		after := time.Now()
		if err != nil {
			return nil, err
		}
		f := strings.Fields(out)
		if len(f) == 0 {
			return nil, fmt.Errorf("/proc/uptime: %q", out)
		}
		if up, err = strconv.ParseFloat(f[0], 64); err != nil {
			return nil, fmt.Errorf("/proc/uptime: %q", out)
		}
		mid := before.Add(after.Sub(before) / 2)
		k := mid.Add(-time.Duration(up * float64(time.Second)))
		// The quickest round trip bounds the error best.
		if i == 0 || after.Sub(before) < 400*time.Millisecond {
			kernel = k
		}
	}
	g := &guest{Kernel: kernel.Sub(t0).Seconds()}
	for deadline := time.Now().Add(90 * time.Second); ; {
		out, err := n.Run("systemctl show -P UserspaceTimestampMonotonic; systemctl show -P ActiveEnterTimestampMonotonic multi-user.target; systemctl list-units --failed --plain --no-legend | wc -l", 30*time.Second)
		if err != nil {
			return g, err
		}
		f := strings.Fields(out)
		if len(f) != 3 {
			return g, fmt.Errorf("systemctl show: %q", out)
		}
		us, _ := strconv.ParseFloat(f[0], 64)
		mu, _ := strconv.ParseFloat(f[1], 64)
		g.Failed, _ = strconv.Atoi(f[2])
		g.Root = g.Kernel + us/1e6
		if mu > 0 {
			g.MultiUser = g.Kernel + mu/1e6
			return g, nil
		}
		if time.Now().After(deadline) {
			return g, errors.New("multi-user.target not reached 90 s after login:")
		}
		time.Sleep(5 * time.Second)
	}
}

// powerOn records when a node was powered on: just before its QEMU starts.
var powerOn = map[string]time.Time{}

func startOf(n *lab.Node) time.Time { return powerOn[n.Console] }

func (c config) ownQEMU(l *lab.Lab, node string) int {
	for _, p := range l.Procs {
		if p.Name == node {
			return p.PID
		}
	}
	return 0
}

// keepLogs copies the servers' logs of one boot under OUT/logs.
func (c config) keepLogs(l *lab.Lab, name string) {
	m, _ := filepath.Glob(filepath.Join(l.Dir, "*.log"))
	for _, f := range m {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		os.WriteFile(filepath.Join(c.out, "logs", name+"-"+filepath.Base(f)), b, 0o644)
		// Start appends to its logs: each boot's copy holds that boot only.
		os.Truncate(f, 0)
	}
}

// reset takes down whatever a killed earlier run left in dir/name.
func reset(dir, name string) {
	if old, err := lab.Load(dir); err == nil {
		old.Out = io.Discard
		old.Down()
	}
	l := &lab.Lab{Dir: dir, Name: name, Out: io.Discard}
	l.Down() // the namespaces, if lab.json never named them
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func specFor(fw, mac string) lab.NodeSpec {
	// The lab's nodes: BIOS with e1000, UEFI with virtio-net, 1 GiB, one vCPU.
	s := lab.NodeSpec{Name: "node01", MAC: mac, Firmware: lab.Firmware(fw), NIC: "e1000", MemoryMB: 1024}
	if fw == "uefi" {
		s.NIC = "virtio-net-pci"
	}
	return s
}

func startNode(l *lab.Lab, spec lab.NodeSpec) (*lab.Node, error) {
	console := filepath.Join(l.Dir, spec.Name+".console")
	t := time.Now()
	n, err := l.StartNode(spec)
	if err == nil {
		powerOn[console] = t
	}
	return n, err
}

// waitLog waits until the log file shows want after offset.
func waitLog(path string, off int64, want string, timeout time.Duration, alive func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if int64(len(b)) > off && bytes.Contains(b[off:], []byte(want)) {
			return nil
		}
		if alive != nil && !alive() {
			return fmt.Errorf("exited before %q in %s", want, path)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no %q in %s after %v", want, path, timeout)
}

func size(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func running(cmd *exec.Cmd) func() bool {
	return func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(b, ')')
		return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
	}
}

// upBootd is `bootd lab up --nodes 1 --firmware FW` (lab.UpCluster) with
// the NIC the lab gives each firmware in a mixed lab: UpCluster alone would
// give a one-node UEFI lab an e1000. bootd must have indexed the image
// before the node is powered on, as the peer's servers are up before it.
// upBootd starts bootd with http.boot mode: chain (its default, the HTTP
// path for the lab's iPXE ROMs) or off (pxelinux/syslinux over TFTP).
func (c config) upBootd(fw, mode string) (*lab.Lab, *lab.Node, error) {
	cfg := filepath.Join(c.dir, "bootd.yaml")
	if mode != "chain" || c.record != "" {
		b, err := os.ReadFile(cfg)
		if err != nil {
			return nil, nil, err
		}
		name := "bootd-" + mode
		if mode != "chain" {
			if !bytes.Contains(b, []byte("boot: chain")) {
				return nil, nil, errors.New("the lab's bootd.yaml has no http boot: chain to change")
			}
			b = bytes.Replace(b, []byte("boot: chain"), []byte("boot: "+mode), 1)
		}
		if c.record != "" {
			// nfs.record: every NFS call of the boot, for bench/storm.
			if !bytes.Contains(b, []byte("nfs: {")) {
				return nil, nil, errors.New("the lab's bootd.yaml has no nfs: {...} line to add record to")
			}
			os.Remove(c.record + ".raw")
			b = bytes.Replace(b, []byte("nfs: {"), []byte(fmt.Sprintf("nfs: {record: %q, ", c.record+".raw")), 1)
			name += "-record"
		}
		cfg = filepath.Join(c.dir, name+".yaml")
		if err := os.WriteFile(cfg, b, 0o644); err != nil {
			return nil, nil, err
		}
	}
	dir := filepath.Join(c.dir, "lab")
	reset(dir, bootdLab)
	l, err := lab.Up(dir, bootdLab)
	if err != nil {
		return nil, nil, err
	}
	if err := l.StartSiteDHCP(); err != nil {
		return l, nil, err
	}
	logPath := filepath.Join(dir, "bootd.log")
	off := size(logPath)
	cmd, err := l.Start("master", "bootd", c.bootd, "serve", "--config", cfg)
	if err != nil {
		return l, nil, err
	}
	if err := waitLog(logPath, off, "indexed generation", 60*time.Second, running(cmd)); err != nil {
		return l, nil, fmt.Errorf("bootd: %w", err)
	}
	time.Sleep(time.Second)
	n, err := startNode(l, specFor(fw, bootdMAC))
	return l, n, err
}

// netns builds the namespaces of a lab that is not lab.Up's: the switch
// (bridge br0, which lab.StartNode plugs taps into) and, when withServers,
// site and master on 10.214.0.0/24.
func netns(name string, withServers bool) error {
	ns := func(role string) string { return name + "-" + role }
	steps := [][]string{
		{"ip", "netns", "add", ns("sw")},
		{"ip", "-n", ns("sw"), "link", "set", "lo", "up"},
		{"ip", "-n", ns("sw"), "link", "add", "br0", "type", "bridge", "forward_delay", "0"},
		{"ip", "-n", ns("sw"), "link", "set", "br0", "up"},
	}
	if withServers {
		steps = append(steps,
			[]string{"ip", "netns", "add", ns("site")},
			[]string{"ip", "netns", "add", ns("master")},
			[]string{"ip", "-n", ns("site"), "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns("master"), "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns("sw"), "link", "add", "to-site", "type", "veth", "peer", "name", "s0", "netns", ns("site")},
			[]string{"ip", "-n", ns("sw"), "link", "add", "to-master", "type", "veth", "peer", "name", "m0", "netns", ns("master")},
			[]string{"ip", "-n", ns("sw"), "link", "set", "to-site", "master", "br0", "up"},
			[]string{"ip", "-n", ns("sw"), "link", "set", "to-master", "master", "br0", "up"},
			[]string{"ip", "-n", ns("site"), "addr", "add", peerSiteIP + "/24", "dev", "s0"},
			[]string{"ip", "-n", ns("site"), "link", "set", "s0", "up"},
			[]string{"ip", "-n", ns("master"), "addr", "add", peerMasterIP + "/24", "dev", "m0"},
			[]string{"ip", "-n", ns("master"), "link", "set", "m0", "up"},
		)
	}
	for _, s := range steps {
		if err := sh(s...); err != nil {
			return err
		}
	}
	return nil
}

// upPeer starts the hand-wired stack: site DHCP (as the lab's), rpcbind
// (with a /run of its own: its socket file would otherwise be shared by
// every network namespace), nfs-ganesha exporting the tree read-only over
// NFSv3, and dnsmasq as proxy-DHCP with its own TFTP server.
func (c config) upPeer(fw string) (*lab.Lab, *lab.Node, error) {
	dir := filepath.Join(c.out, "peer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	reset(dir, peerLab)
	l := &lab.Lab{Dir: dir, Name: peerLab}
	if err := netns(peerLab, true); err != nil {
		return l, nil, err
	}
	os.Remove(filepath.Join(dir, "site.leases"))
	if _, err := l.Start("site", "site-dnsmasq", "dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null",
		"--interface=s0", "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--dhcp-range="+peerLow+","+peerHigh+",255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(dir, "site.leases"), "--log-dhcp"); err != nil {
		return l, nil, err
	}
	rpc, err := l.Start("master", "rpcbind", "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount -t tmpfs -o mode=755 bootrace-run /run || exit 1
mkdir -p /run/rpcbind && chown _rpc /run/rpcbind 2>/dev/null
exec "$@"`, "_", "rpcbind", "-f", "-w")
	if err != nil {
		return l, nil, err
	}
	sock := fmt.Sprintf("/proc/%d/root/run/rpcbind.sock", rpc.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
		}
		if time.Now().After(deadline) || !running(rpc)() {
			return l, nil, fmt.Errorf("rpcbind did not start: see %s", filepath.Join(dir, "rpcbind.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`NFS_CORE_PARAM {
  Protocols = 3;
  NFS_Protocols = 3;
  NFS_Port = 2049;
  MNT_Port = %s;
  Enable_NLM = false;
  Enable_RQUOTA = false;
}
NFSV4 { Graceless = true; }
EXPORT {
  Export_Id = 1;
  Path = %s;
  Pseudo = %s;
  Access_Type = RO;
  Squash = No_Root_Squash;
  Protocols = 3;
  Transports = UDP, TCP;
  SecType = sys;
  FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
`, ganeshaMntPort, c.tree, c.tree)), 0o644); err != nil {
		return l, nil, err
	}
	glog := filepath.Join(dir, "ganesha.nfsd.log")
	os.Remove(glog)
	g, err := l.Start("master", "ganesha", "nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", rpc.Process.Pid),
		"ganesha.nfsd", "-F", "-f", conf, "-L", glog, "-p", filepath.Join(dir, "ganesha.pid"))
	if err != nil {
		return l, nil, err
	}
	if err := waitLog(glog, 0, "NFS SERVER INITIALIZED", 60*time.Second, running(g)); err != nil {
		return l, nil, fmt.Errorf("ganesha: %w", err)
	}
	if _, err := l.Start("master", "pxe-dnsmasq", "dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null",
		"--interface=m0", "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--dhcp-range="+peerNet+",proxy,255.255.255.0",
		// dnsmasq adds ".0" to a basename without a dot (x86PC).
		"--pxe-service=x86PC,bootrace peer BIOS,bios/pxelinux",
		"--pxe-service=BC_EFI,bootrace peer UEFI,efi64/syslinux.efi",
		"--pxe-service=X86-64_EFI,bootrace peer UEFI,efi64/syslinux.efi",
		"--enable-tftp", "--tftp-root="+c.tftp, "--log-dhcp"); err != nil {
		return l, nil, err
	}
	time.Sleep(time.Second)
	n, err := startNode(l, specFor(fw, peerMAC))
	return l, n, err
}

// upLimit boots the image from a virtio disk with QEMU -kernel/-initrd: the
// lab's node otherwise (memory, one vCPU, NIC on an empty bridge, serial
// log, firmware), no network boot.
func (c config) upLimit(fw string) (*lab.Lab, *lab.Node, error) {
	dir := filepath.Join(c.out, "limit")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	reset(dir, limitLab)
	l := &lab.Lab{Dir: dir, Name: limitLab}
	if err := netns(limitLab, false); err != nil {
		return l, nil, err
	}
	// A fresh copy each boot: the limit boots read-write, and a second
	// boot of the same disk would not be a first boot (machine-id).
	disk := filepath.Join(dir, "disk.img")
	os.Remove(disk)
	if err := sh("cp", "--sparse=always", c.limitDisk, disk); err != nil {
		return l, nil, err
	}
	spec := specFor(fw, limitMAC)
	spec.Disk = disk
	spec.Kernel, spec.Initrd, spec.Append = c.limitKernel, c.limitInitrd, "root=/dev/vda rw "+c.append
	n, err := startNode(l, spec)
	return l, n, err
}

// marker is a line in a server's log that marks a stage of the boot: the
// time it is first seen is the stage's (logs are polled every 100 ms).
type marker struct {
	file, stage string
	match       func(line string) bool
}

// watch waits for "login:" on the node's console and keeps a copy of the
// console with the seconds since power-on at the start of each line. It
// also counts QEMU processes on the machine that are not this node's.
func watch(ctx context.Context, n *lab.Node, t0 time.Time, timeout time.Duration, copyTo string, own int, marks []marker) (time.Duration, int, map[string]time.Duration, error) {
	seen := map[string]time.Duration{}
	f, err := os.Create(copyTo)
	if err != nil {
		return 0, 0, seen, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	var off int
	lineStart := true
	foreign := 0
	lastScan := time.Time{}
	for {
		now := time.Now()
		for _, m := range marks {
			if _, ok := seen[m.stage]; ok {
				continue
			}
			lines, _ := os.ReadFile(m.file)
			for _, line := range strings.Split(string(lines), "\n") {
				if m.match(line) {
					seen[m.stage] = now.Sub(t0)
					break
				}
			}
		}
		b, _ := os.ReadFile(n.Console)
		if len(b) > off {
			el := now.Sub(t0).Seconds()
			for _, ch := range b[off:] {
				if lineStart {
					fmt.Fprintf(w, "[%7.2fs] ", el)
					lineStart = false
				}
				w.WriteByte(ch)
				if ch == '\n' {
					lineStart = true
				}
			}
			off = len(b)
			if bytes.Contains(b, []byte("login:")) {
				w.WriteString("\n")
				return now.Sub(t0), foreign, seen, nil
			}
		}
		if now.Sub(lastScan) > time.Second {
			lastScan = now
			if k := countQEMU(own); k > foreign {
				foreign = k
			}
		}
		if now.Sub(t0) > timeout {
			return 0, foreign, seen, fmt.Errorf("timed out after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return 0, foreign, seen, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cpuStat returns the machine's busy and total CPU time so far (all
// CPUs, clock ticks).
func cpuStat() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// procCPU returns a process's CPU time (user + system, clock ticks).
func procCPU(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	sy, _ := strconv.ParseUint(f[12], 10, 64)
	return u + sy
}

// contended: the node shared the machine with other work: more than a
// quarter of a core busy besides its QEMU on average (bootd or the peer's
// servers serving one node take a few hundredths). Another QEMU alone does
// not count: a node idling at its login prompt takes about 0.01 core.
func (r result) contended() bool { return r.OtherCPU > 0.25 }

// countQEMU counts running qemu-system processes other than own.
func countQEMU(own int) int {
	ents, _ := os.ReadDir("/proc")
	k := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == own {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		argv0 := string(bytes.SplitN(b, []byte{0}, 2)[0])
		if strings.Contains(filepath.Base(argv0), "qemu-system") {
			k++
		}
	}
	return k
}

// bootdStages reads bootd's own record of the boot: each stage, in seconds
// after power-on.
func bootdStages(ctx context.Context, l *lab.Lab, mac string, t0 time.Time) map[string]string {
	out := map[string]string{}
	// The "up" report may come a moment after the login prompt.
	for i := 0; i < 20; i++ {
		d, err := l.API().Node(ctx, mac)
		if err == nil && len(d.Boots) > 0 {
			b := d.Boots[len(d.Boots)-1]
			for _, a := range b.Stages {
				out[string(a.Stage)] = fmt.Sprintf("%.1f", a.Time.Sub(t0).Seconds())
			}
			if _, ok := out["up"]; ok {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func table(w io.Writer, c config, results []result) {
	fmt.Fprintf(w, "\nPower-on to serial \"login:\", median seconds over %d round(s) (TCG, 1 vCPU, 1 GiB)\n\n", c.rounds)
	medians(w, c, results, func(result) bool { return true })
	var contended []string
	for _, r := range results {
		if r.contended() {
			contended = append(contended, fmt.Sprintf("r%d-%s-%s", r.Round, r.Firmware, r.System))
		}
	}
	if len(contended) > 0 {
		fmt.Fprintf(w, "\nContended boots (other work kept more than 0.25 core busy beside the node): %s.\nWithout them:\n\n", strings.Join(contended, ", "))
		medians(w, c, results, func(r result) bool { return !r.contended() })
	}
	stageTable(w, c, results)
	fmt.Fprintln(w, "\nPer boot (seconds; '-' = did not reach login:; other CPU = cores busy besides the node's QEMU):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tfirmware\tsystem\tseconds\tother QEMUs\tother CPU\tresult\tstages (s after power-on): the server's record | the node's clock")
	for _, r := range results {
		s := "-"
		if r.Result == "ok" {
			s = fmt.Sprintf("%.1f", r.Seconds)
		}
		var st []string
		for _, name := range lab.Stages {
			if v, ok := r.Stages[name]; ok {
				st = append(st, name+" "+v)
			}
		}
		for _, name := range []string{"fetched"} {
			if v, ok := r.Stages[name]; ok {
				st = append(st, name+" "+v)
			}
		}
		if g := r.Guest; g != nil {
			st = append(st, fmt.Sprintf("| node: kernel %.1f, root %.1f, multi-user %.1f, failed units %d", g.Kernel, g.Root, g.MultiUser, g.Failed))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%.2f\t%s\t%s\n", r.Round, r.Firmware, r.System, s, r.Foreign, r.OtherCPU, r.Result, strings.Join(st, ", "))
	}
	tw.Flush()
}

// stageTable writes where the time went, per firmware and system: medians
// over the boots that reached login, each stage in seconds after power-on.
// DHCP answered is the server's record (bootd's, the peer's dnsmasq log);
// the rest is the node's own clock (guestStages), the same for all four.
func stageTable(w io.Writer, c config, results []result) {
	fmt.Fprintln(w, "\nWhere the time goes: medians, seconds after power-on (DHCP answered from the server; the rest from the node's clock)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "firmware\tsystem\tDHCP answered\tkernel running\troot mounted\tmulti-user\tlogin:\tfailed units\t")
	for _, fw := range c.firmwares {
		for _, sys := range c.systems {
			var dhcp, kernel, root, mu, login, failed []float64
			for _, r := range results {
				if r.Firmware != fw || r.System != sys || r.Result != "ok" {
					continue
				}
				login = append(login, r.Seconds)
				if v, err := strconv.ParseFloat(r.Stages["dhcp"], 64); err == nil {
					dhcp = append(dhcp, v)
				}
				if g := r.Guest; g != nil && g.MultiUser > 0 {
					kernel = append(kernel, g.Kernel)
					root = append(root, g.Root)
					mu = append(mu, g.MultiUser)
					failed = append(failed, float64(g.Failed))
				}
			}
			num := func(v []float64, form string) string {
				if len(v) == 0 {
					return "-"
				}
				return fmt.Sprintf(form, median(v))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", fw, sys, num(dhcp, "%.1f"), num(kernel, "%.1f"),
				num(root, "%.1f"), num(mu, "%.1f"), num(login, "%.1f"), num(failed, "%.0f"))
		}
	}
	tw.Flush()
}

// medians writes the table of medians over the boots that pass keep.
func medians(w io.Writer, c config, results []result, keep func(result) bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "firmware\tbootd (HTTP)\tbootd (TFTP)\tpeer\tlimit\tHTTP/peer\tTFTP/peer\tHTTP-limit\tok (HTTP/TFTP/peer/limit)\t")
	for _, fw := range c.firmwares {
		med := map[string]float64{}
		ok := map[string]string{}
		for _, sys := range systems {
			var v []float64
			n := 0
			for _, r := range results {
				if r.Firmware == fw && r.System == sys && keep(r) {
					n++
					if r.Result == "ok" {
						v = append(v, r.Seconds)
					}
				}
			}
			med[sys] = median(v)
			ok[sys] = fmt.Sprintf("%d/%d", len(v), n)
		}
		num := func(f float64, form string) string {
			if math.IsNaN(f) {
				return "-"
			}
			return fmt.Sprintf(form, f)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s %s %s %s\t\n", fw, num(med["bootd"], "%.1f"), num(med["bootd-tftp"], "%.1f"),
			num(med["peer"], "%.1f"), num(med["limit"], "%.1f"),
			num(med["bootd"]/med["peer"], "%.2f"), num(med["bootd-tftp"]/med["peer"], "%.2f"), num(med["bootd"]-med["limit"], "%+.1f"),
			ok["bootd"], ok["bootd-tftp"], ok["peer"], ok["limit"])
	}
	tw.Flush()
}

// cleanupCmd takes down the three labs of a killed run: their processes,
// verified by PID and start time (lab.Proc), and their namespaces.
func cleanupCmd(args []string, log logf) error {
	fs := flag.NewFlagSet("cleanup", flag.ExitOnError)
	out := fs.String("out", "/var/tmp/bootrace", "output directory")
	dir := fs.String("dir", "", "the bootd lab's --dir")
	fs.Parse(args)
	labs := map[string]string{filepath.Join(*out, "peer"): peerLab, filepath.Join(*out, "limit"): limitLab}
	if *dir != "" {
		labs[filepath.Join(*dir, "lab")] = bootdLab
	}
	for d, name := range labs {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		reset(d, name)
	}
	return nil
}

// tableCmd prints the table of an earlier run from its raw.jsonl.
func tableCmd(args []string) error {
	fs := flag.NewFlagSet("table", flag.ExitOnError)
	out := fs.String("out", "/var/tmp/bootrace", "output directory of the run")
	fs.Parse(args)
	f, err := os.Open(filepath.Join(*out, "raw.jsonl"))
	if err != nil {
		return err
	}
	defer f.Close()
	var c config
	var results []result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			result
			Seconds *float64 `json:"seconds"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return err
		}
		r.result.Seconds = math.NaN()
		if r.Seconds != nil {
			r.result.Seconds = *r.Seconds
		}
		results = append(results, r.result)
		if r.Round > c.rounds {
			c.rounds = r.Round
		}
		if !contains(c.firmwares, r.Firmware) {
			c.firmwares = append(c.firmwares, r.Firmware)
		}
		if !contains(c.systems, r.System) {
			c.systems = append(c.systems, r.System)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	table(os.Stdout, c, results)
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

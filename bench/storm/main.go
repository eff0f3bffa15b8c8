// Command storm plays a boot storm: N diskless nodes powered on at once
// against one boot server, each doing on the wire what a real node does —
// PXE DHCP (the proxy DISCOVER on 67, the REQUEST on 4011 where the offer
// names no file), the loader's files over TFTP or iPXE's over HTTP, the
// NFS MOUNT and then the NFS calls a real node made during its boot,
// replayed from a recording (bootd's nfs.record) — with the timeouts and
// retries firmware, loaders and the Linux NFS client have. It reports
// when the last node finished, which nodes were lost and why, each
// stage's p50/p99, retransmissions, and the server's CPU time and peak
// memory.
//
// It is a benchmark, not a bootd verb: it needs a network namespace with
// a thousand addresses, and it is run against bootd and against the
// hand-wired stack alike (bench/storm.sh). Each node has its own source
// address, inside namespaces storm creates; it never sends to anything
// outside them.
//
//	storm net up -n N        namespaces storm-srv (10.215.0.1/16, veth sv0)
//	                         and storm-cli (veth cl0, N node addresses)
//	storm net down
//	storm run -n N -server 10.215.0.1 -replay FILE [flags]   (in storm-cli)
//	storm line bootd.json peer.json                          the summary line
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

const (
	nsServer = "storm-srv"
	nsClient = "storm-cli"
)

var (
	serverAddr = netip.MustParsePrefix("10.215.0.1/16")
	firstNode  = netip.MustParseAddr("10.215.1.1")
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "net":
		err = netCmd(os.Args[2:])
	case "run":
		err = runCmd(os.Args[2:])
	case "line":
		err = lineCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: storm net up -n N | storm net down | storm run [flags] | storm line BOOTD.json PEER.json")
	os.Exit(2)
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netCmd makes or removes the two namespaces: the server's and the
// nodes', joined by a veth pair.
func netCmd(args []string) error {
	if len(args) == 0 {
		usage()
	}
	fs := flag.NewFlagSet("net", flag.ExitOnError)
	n := fs.Int("n", 50, "node addresses")
	fs.Parse(args[1:])
	switch args[0] {
	case "down":
		sh("ip", "netns", "del", nsClient)
		sh("ip", "netns", "del", nsServer)
		return nil
	case "up":
	default:
		usage()
	}
	sh("ip", "netns", "del", nsClient)
	sh("ip", "netns", "del", nsServer)
	for _, c := range [][]string{
		{"ip", "netns", "add", nsServer},
		{"ip", "netns", "add", nsClient},
		{"ip", "link", "add", "sv0", "netns", nsServer, "type", "veth", "peer", "name", "cl0", "netns", nsClient},
		{"ip", "-n", nsServer, "addr", "add", serverAddr.String(), "dev", "sv0"},
		{"ip", "-n", nsServer, "link", "set", "lo", "up"},
		{"ip", "-n", nsServer, "link", "set", "sv0", "up"},
		{"ip", "-n", nsClient, "link", "set", "lo", "up"},
		{"ip", "-n", nsClient, "link", "set", "cl0", "up"},
		// The nodes' source ports for NFS are below 1024 and many.
		{"ip", "netns", "exec", nsServer, "sysctl", "-qw", "net.core.somaxconn=4096", "net.ipv4.tcp_max_syn_backlog=4096"},
	} {
		if err := sh(c...); err != nil {
			return err
		}
	}
	// All the addresses in one batch: a thousand `ip` runs take seconds.
	var b strings.Builder
	ip := firstNode
	for i := 0; i < *n; i++ {
		fmt.Fprintf(&b, "addr add %s/16 dev cl0 noprefixroute\n", ip)
		ip = ip.Next()
	}
	cmd := exec.Command("ip", "-n", nsClient, "-batch", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("adding %d addresses: %v: %s", *n, err, out)
	}
	// The route the addresses would have made, once.
	return sh("ip", "-n", nsClient, "route", "add", "10.215.0.0/16", "dev", "cl0", "src", firstNode.String())
}

// report is one storm's result.
type report struct {
	Server   string        `json:"server"` // a name: bootd, peer
	N        int           `json:"n"`
	Path     string        `json:"path"`
	Firmware string        `json:"firmware"`
	Compress float64       `json:"compress"`
	Last     time.Duration `json:"last"` // power-on to the last node booted
	Lost     int           `json:"lost"`
	Reasons  map[string]int
	Stages   map[string][2]time.Duration `json:"stages"` // p50, p99
	Retrans  struct {
		DHCP, Fetch, NFS int
	} `json:"retrans"`
	NFSErrors  int       `json:"nfs_errors"`
	CPUSeconds float64   `json:"cpu_seconds"`
	PeakRSS    int64     `json:"peak_rss_bytes"`
	Nodes      []outcome `json:"nodes"`
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	n := fs.Int("n", 50, "nodes")
	name := fs.String("name", "bootd", "the server's name in the report")
	server := fs.String("server", serverAddr.Addr().String(), "the boot server's address")
	fwName := fs.String("firmware", "ipxe", "what the nodes' ROMs are: ipxe (HTTP path where the server offers it), bios or uefi (PXE, TFTP)")
	replay := fs.String("replay", "bench/storm/testdata/boot-nfs.jsonl.gz", "the NFS calls of one real boot (bootd's nfs.record)")
	compress := fs.Float64("compress", 1, "divide the recording's pace by this")
	secure := fs.Bool("secure", true, "NFS from source ports below 1024 (the Linux client does)")
	mountPort := fs.Int("mount-port", 20048, "MOUNT's port when the command line says nfsroot= (no port)")
	nfsPort := fs.Int("nfs-port", 2049, "NFS's port likewise")
	spread := fs.Duration("spread", time.Second, "power-on of the nodes spread over this")
	timeout := fs.Duration("timeout", 15*time.Minute, "the storm ends after this; unfinished nodes are lost")
	iface := fs.String("iface", "cl0", "the nodes' interface")
	pids := fs.String("pids", "", "the server's process IDs (comma-separated), for CPU time and peak memory")
	out := fs.String("out", "", "write the report (JSON) here")
	fs.Parse(args)

	fw, ok := map[string]firmware{"ipxe": fwIPXE, "bios": fwBIOS, "uefi": fwUEFI}[*fwName]
	if !ok {
		return fmt.Errorf("-firmware %q: want ipxe, bios or uefi", *fwName)
	}
	srv, err := netip.ParseAddr(*server)
	if err != nil {
		return fmt.Errorf("-server: %w", err)
	}
	rec, err := loadRecording(*replay)
	if err != nil {
		return err
	}
	if *compress <= 0 {
		return errors.New("-compress must be above 0")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	dp, err := listenDHCP(ctx, *iface)
	if err != nil {
		return err
	}
	defer dp.conn.Close()
	p := &plan{server: srv, fw: fw, rec: rec, compress: *compress, secure: *secure,
		mountPort: *mountPort, nfsPort: *nfsPort, prefixLen: 16}
	procs := parsePIDs(*pids)
	cpu0 := cpuTime(procs)

	rep := report{Server: *name, N: *n, Firmware: *fwName, Compress: *compress, Reasons: map[string]int{}}
	fmt.Fprintf(os.Stderr, "storm: %d nodes (%s) against %s at %s, %d NFS calls each at 1/%g of their pace\n",
		*n, *fwName, *name, srv, len(rec.ops), *compress)
	t0 := time.Now()
	outs := make([]outcome, *n)
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		nd := newNode(i, firstNode)
		delay := time.Duration(float64(*spread) * float64(i) / float64(max(*n, 1)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			outs[nd.i] = p.boot(ctx, dp, nd, t0)
		}()
	}
	progress := time.NewTicker(10 * time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-progress.C:
			fmt.Fprintf(os.Stderr, "storm: %v\n", time.Since(t0).Round(time.Second))
		}
	}
	progress.Stop()
	rep.CPUSeconds = cpuTime(procs) - cpu0
	rep.PeakRSS = peakRSS(procs)
	rep.Nodes = outs
	summarize(&rep)
	table(os.Stdout, rep)
	if *out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func summarize(rep *report) {
	by := map[string][]time.Duration{}
	for _, o := range rep.Nodes {
		if o.Path != "" {
			rep.Path = o.Path
		}
		rep.Retrans.DHCP += o.Retrans
		rep.Retrans.NFS += o.NFS.Retrans
		rep.NFSErrors += o.NFS.Errors
		if o.Lost != "" {
			rep.Lost++
			// The reason without the node's own details.
			r := o.Lost
			if i := strings.Index(r, ": "); i >= 0 {
				if j := strings.Index(r[i+2:], ": "); j >= 0 {
					r = r[:i+2+j]
				}
			}
			rep.Reasons[r]++
			continue
		}
		for s, d := range o.At {
			by[s] = append(by[s], d)
		}
		if d := o.At["booted"]; d > rep.Last {
			rep.Last = d
		}
	}
	rep.Stages = map[string][2]time.Duration{}
	for s, v := range by {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		rep.Stages[s] = [2]time.Duration{pct(v, 0.50), pct(v, 0.99)}
	}
}

func pct(v []time.Duration, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(i, 0)]
}

func table(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nstorm against %s: %d nodes (%s, %s path), NFS replay at 1/%g of its pace\n", rep.Server, rep.N, rep.Firmware, rep.Path, rep.Compress)
	fmt.Fprintf(w, "last node booted at %.1f s; lost %d", rep.Last.Seconds(), rep.Lost)
	for r, k := range rep.Reasons {
		fmt.Fprintf(w, "; %d × %s", k, r)
	}
	fmt.Fprintf(w, "\nretransmissions: DHCP %d, NFS %d; NFS errors %d; server CPU %.1f s, peak RSS %d MiB\n\n",
		rep.Retrans.DHCP, rep.Retrans.NFS, rep.NFSErrors, rep.CPUSeconds, rep.PeakRSS>>20)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tp50 (s)\tp99 (s)\t")
	for _, s := range stages {
		if v, ok := rep.Stages[s]; ok {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t\n", s, v[0].Seconds(), v[1].Seconds())
		}
	}
	tw.Flush()
}

func parsePIDs(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if p, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// cpuTime is the processes' user and system time so far, in seconds.
func cpuTime(pids []int) float64 {
	var t float64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		k, _ := strconv.ParseFloat(f[12], 64)
		t += (u + k) / 100 // USER_HZ
	}
	return t
}

// peakRSS is the sum of the processes' peak resident memory (VmHWM): the
// server is started for the storm, so its peak is the storm's.
func peakRSS(pids []int) int64 {
	var total int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// lineCmd prints the one line other tools read:
// storm N=1000 bootd=41.2s lost=0 peer=97.5s peer_lost=3 rss=180MiB
func lineCmd(args []string) error {
	if len(args) != 2 {
		usage()
	}
	var b, p report
	for i, r := range []*report{&b, &p} {
		data, err := os.ReadFile(args[i])
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, r); err != nil {
			return fmt.Errorf("%s: %w", args[i], err)
		}
	}
	fmt.Printf("storm N=%d bootd=%.1fs lost=%d peer=%.1fs peer_lost=%d rss=%dMiB\n",
		b.N, b.Last.Seconds(), b.Lost, p.Last.Seconds(), p.Lost, b.PeakRSS>>20)
	return nil
}

package lab

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// failoverLoad reads the image in rounds: the page cache dropped, up to
// 200 files of /usr/bin and /usr/sbin read whole, and /etc/shadow, which
// only root may read (a master that did not know the node would squash
// it). Each round ends with a line "SECONDS ERRORS": the node's clock
// and the errors so far.
const failoverLoad = `while :; do
echo 3 >/proc/sys/vm/drop_caches
find /usr/bin /usr/sbin -maxdepth 1 -type f 2>>/run/load.err | head -n 200 | xargs cat >/dev/null 2>>/run/load.err || echo round failed >>/run/load.err
cat /etc/shadow >/dev/null 2>>/run/load.err
echo "$(date +%s.%N) $(wc -l </run/load.err)" >>/run/load.rounds
done
`

// TestFailover: two masters serve one cluster in proxy-DHCP mode beside
// the site's DHCP server, with the same config but their state dirs, and
// address: the VIP that keepalived gives the master whose bootd answers.
// Master 2 serves master 1's generation, the same bytes under the same
// name and number. A BIOS and a UEFI node boot through the VIP (both
// masters answer their proxy DHCP) and read the image in a loop; then
// master 1's bootd is killed while a third node is reset. The VIP must
// move to master 2, the loaded nodes must see a stall and no error, and
// the reset node must boot from master 2.
func TestFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU nodes from two masters: not in -short")
	}
	bootd := labBootd(t)
	ctx := context.Background()
	c, err := UpCluster(ctx, Options{Dir: labDir(t), Name: fmt.Sprintf("bdf%d", os.Getpid()%100000), Nodes: 3, Masters: 2,
		Firmware: "mixed", Bootd: bootd, Out: tWriter{t}, Timeout: 6 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Down()
	waitUp(t, c)
	// Master 1 held the VIP: it served the boots (its records have them
	// from config to up), and it told them to mount the VIP.
	for _, r := range c.Reports {
		d, err := c.APIOf(1).Node(ctx, r.MAC)
		if err != nil || d.Stage != "up" || !strings.Contains(d.Plan.Cmdline, "bootd.nfs="+ServiceIP+":") {
			t.Fatalf("%s on master 1: %v, stage %s, command line %q", r.Name, err, d.Stage, d.Plan.Cmdline)
		}
	}

	// The load on node01 (BIOS) and node02 (UEFI); node03 is reset at the
	// kill.
	loaded := c.Reports[:2]
	offset := map[string]float64{} // node clock minus this machine's
	script := base64.StdEncoding.EncodeToString([]byte(failoverLoad))
	for _, r := range loaded {
		n := &r.Node
		if err := n.Login("root", LabPassword, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if out, err := n.Run("findmnt -n -o SOURCE /run/bootd/ro", 30*time.Second); err != nil || !strings.HasPrefix(out, ServiceIP+":/") {
			t.Fatalf("%s: root from %q (%v), want the VIP %s", n.Name, out, err, ServiceIP)
		}
		if _, err := n.Run("echo "+script+" | base64 -d >/run/load.sh && (nohup sh /run/load.sh >/dev/null 2>&1 &)", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		out, err := n.Run("date +%s.%N", 30*time.Second)
		mid := before.Add(time.Since(before) / 2)
		v, perr := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil || perr != nil {
			t.Fatalf("%s: its clock: %q %v %v", n.Name, out, err, perr)
		}
		offset[n.Name] = v - float64(mid.UnixNano())/1e9
	}
	time.Sleep(30 * time.Second)

	// The crash: master 1's bootd killed, node03 reset at the same moment.
	if !c.HoldsVIP(1) || c.HoldsVIP(2) {
		t.Fatalf("before the kill: master 1 holds the VIP %v, master 2 %v", c.HoldsVIP(1), c.HoldsVIP(2))
	}
	n3, _ := c.Node("node03")
	n3off := n3.consoleLen()
	killed := time.Now()
	movedc := make(chan time.Duration, 1)
	go func() {
		for time.Since(killed) < 30*time.Second {
			if c.HoldsVIP(2) && !c.HoldsVIP(1) {
				movedc <- time.Since(killed)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		movedc <- 0
	}()
	if err := c.KillBootd(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset("node03"); err != nil {
		t.Fatal(err)
	}
	if moved := <-movedc; moved == 0 {
		t.Fatalf("30 s after master 1's bootd was killed: master 1 holds the VIP %v, master 2 %v", c.HoldsVIP(1), c.HoldsVIP(2))
	} else {
		t.Logf("VIP on master 2 %v after master 1's bootd was killed", moved.Round(10*time.Millisecond))
	}

	// node03 boots from master 2: its records there have the stages after
	// the reset, from DHCP to up. (Master 2 answered node03's first
	// DHCP too, so the boot they are in may have begun before.)
	api2 := c.APIOf(2)
	var up time.Duration
	var stages []string
	for time.Since(killed) < 5*time.Minute && up == 0 {
		time.Sleep(time.Second)
		d, err := api2.Node(ctx, n3.MAC)
		if err != nil {
			continue
		}
		stages = stages[:0]
		for _, b := range d.Boots {
			for _, a := range b.Stages {
				if a.Time.After(killed) {
					stages = append(stages, string(a.Stage))
					if a.Stage == "up" {
						up = a.Time.Sub(killed)
					}
				}
			}
		}
	}
	if got := strings.Join(stages, " "); up == 0 || !strings.Contains(got, "kernel initrd root") {
		t.Errorf("node03: not up through master 2 5 min after the reset (stages there: %v)\nconsole tail:\n%s", stages, tail(n3.consoleFrom(n3off), 3000))
	} else {
		t.Logf("node03: reset at the kill, up through master 2 after %v (stages %v)", up.Round(100*time.Millisecond), stages)
		if _, err := n3.waitAfter(n3off, "login:", time.Minute); err != nil {
			t.Errorf("node03: %v", err)
		}
	}

	// What the loaded nodes saw: no error, a stall, and the load going on.
	if rest := 60*time.Second - time.Since(killed); rest > 0 {
		time.Sleep(rest)
	}
	for _, r := range loaded {
		n := &r.Node
		out, err := n.Run("cat /run/load.rounds", time.Minute)
		if err != nil {
			t.Errorf("%s: the load's rounds: %v", n.Name, err)
			continue
		}
		var at []float64
		var errs string
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				continue
			}
			at = append(at, v-offset[n.Name]) // on this machine's clock
			errs = f[1]
		}
		sort.Float64s(at)
		k := float64(killed.UnixNano()) / 1e9
		var gaps []float64
		stall, after := 0.0, 0
		for i := 1; i < len(at); i++ {
			g := at[i] - at[i-1]
			if at[i] < k-5 {
				gaps = append(gaps, g)
			}
			// The round in flight at the kill, and those just after.
			if at[i] > k-5 && at[i-1] < k+60 {
				stall = math.Max(stall, g)
			}
			if at[i] > k {
				after++
			}
		}
		sort.Float64s(gaps)
		median := 0.0
		if len(gaps) > 0 {
			median = gaps[len(gaps)/2]
		}
		t.Logf("%s (%s): %d rounds, a round every %.2f s before the kill; longest gap around the kill %.2f s; %d rounds after it; errors %s",
			n.Name, r.Firmware, len(at), median, stall, after, errs)
		if errs != "0" {
			e, _ := n.Run("cat /run/load.err", 30*time.Second)
			t.Errorf("%s: %s errors through the failover:\n%s", n.Name, errs, e)
		}
		if dm, _ := n.Run("dmesg | grep -iE 'stale file handle|input/output error|fileid changed' || true", 30*time.Second); strings.TrimSpace(dm) != "" {
			t.Errorf("%s: the kernel logged:\n%s", n.Name, dm)
		}
		if after < 3 {
			t.Errorf("%s: %d rounds of its load after the kill: it did not go on", n.Name, after)
		}
		if stall > 60 {
			t.Errorf("%s: stalled %.1f s", n.Name, stall)
		}
	}
}

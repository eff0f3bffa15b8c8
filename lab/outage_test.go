package lab

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootd/bootd/events"
)

// TestOutages is the long proof that bootd's absences are invisible to
// running nodes and survivable for booting ones (scripts/outage.sh runs it;
// CI runs the update-and-restart part in TestEndToEnd):
//   - a 60 s outage while both nodes read the whole of /usr in a loop:
//     their I/O stalls and resumes, nothing fails;
//   - bootd killed while a node mounts its root (just after the initrd
//     was fetched): the init retries, the node comes up;
//   - bootd killed while a node downloads its initrd: the boot completes
//     after the restart, or the node starts over, without an operator.
func TestOutages(t *testing.T) {
	if os.Getenv("BOOTD_LONG") == "" {
		t.Skip("long (10 min): BOOTD_LONG=1, or scripts/outage.sh")
	}
	bootd := labBootd(t)
	dir := labDir(t)
	c, err := UpCluster(context.Background(), Options{Dir: dir, Name: fmt.Sprintf("bdo%d", os.Getpid()%100000), Nodes: 2,
		Firmware: "mixed", Bootd: bootd, Out: tWriter{t}, Timeout: 8 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Down()
	c.Wait(context.Background())
	for _, r := range c.Reports {
		if r.Result != "ok" {
			t.Fatalf("%s: %s", r.Name, r.Result)
		}
	}
	// Each pass of the load writes its end time: the longest gap is the
	// stall a node saw. The page cache is dropped before each pass, so
	// that every pass reads from bootd, not from the node's memory.
	const load = `(nohup sh -c 'while :; do echo 3 >/proc/sys/vm/drop_caches; find /usr/bin /usr/sbin /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -print0 | xargs -0 sha256sum >/dev/null 2>>/run/load.err || echo pass failed >>/run/load.err; date +%s >>/run/load.passes; done' >/dev/null 2>&1 &)`
	for _, r := range c.Reports {
		if err := r.Node.Login("root", LabPassword, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Node.Run(load, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Second)
	stopped := time.Now()
	if err := c.StopMaster(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Second)
	if err := c.StartMaster(); err != nil {
		t.Fatal(err)
	}
	t.Logf("bootd stopped for %v", time.Since(stopped).Round(time.Second))
	time.Sleep(60 * time.Second)
	for _, r := range c.Reports {
		n := &r.Node
		errs, _ := n.Run("cat /run/load.err 2>/dev/null; dmesg | grep -iE 'stale file handle|input/output error' || true", 60*time.Second)
		if strings.TrimSpace(errs) != "" {
			t.Errorf("%s: errors through the outage:\n%s", n.Name, errs)
		}
		out, _ := n.Run("cat /run/load.passes", 30*time.Second)
		var ts []int
		for _, f := range strings.Fields(out) {
			if v, err := strconv.Atoi(f); err == nil {
				ts = append(ts, v)
			}
		}
		sort.Ints(ts)
		stall, after := 0, 0
		for i := 1; i < len(ts); i++ {
			stall = max(stall, ts[i]-ts[i-1])
		}
		for _, v := range ts {
			if int64(v) > stopped.Add(60*time.Second).Unix() {
				after++
			}
		}
		msgs, _ := n.Run("dmesg | grep -cE 'not responding' ; dmesg | grep -cE 'nfs: server .* OK'", 30*time.Second)
		t.Logf("%s: %d load passes, longest gap between passes %d s, %d after bootd came back; kernel 'not responding'/'OK' lines: %s",
			n.Name, len(ts), stall, after, strings.Join(strings.Fields(msgs), "/"))
		if after == 0 {
			t.Errorf("%s: the load did not resume after the outage", n.Name)
		}
	}
	// Killed mid-boot: node01 while it mounts its root, node02 while it
	// downloads its initrd.
	for _, k := range []struct {
		node, mac string
		after     string // the stage reached when bootd is killed
	}{{"node01", "52:54:00:bd:00:01", "initrd"}, {"node02", "52:54:00:bd:00:02", "kernel"}} {
		reset := time.Now()
		if err := c.Reset(k.node); err != nil {
			t.Fatal(err)
		}
		api := c.API()
		for time.Since(reset) < 3*time.Minute {
			d, err := api.Node(context.Background(), k.mac)
			if b := d.Boots; err == nil && len(b) > 0 && b[len(b)-1].Start.After(reset) {
				if _, ok := b[len(b)-1].Reached(events.Stage(k.after)); ok {
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := c.RestartMaster(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Since(reset)
		var stage string
		for time.Since(reset) < 8*time.Minute {
			if d, err := api.Node(context.Background(), k.mac); err == nil {
				stage = string(d.Stage)
				if stage == "up" && d.Since.After(reset) {
					break
				}
			}
			time.Sleep(time.Second)
		}
		if stage != "up" {
			n, _ := c.Node(k.node)
			con, _ := os.ReadFile(n.Console)
			d, _ := api.Node(context.Background(), k.mac)
			t.Errorf("%s: killed %v into its boot (after %s); not up 8 min later (stage %s); boots %+v\nconsole tail:\n%s",
				k.node, killed.Round(100*time.Millisecond), k.after, stage, d.Boots, tail(string(con), 3000))
		} else {
			t.Logf("%s: bootd killed %v into its boot (after %s); up %v after the reset", k.node, killed.Round(100*time.Millisecond), k.after, time.Since(reset).Round(time.Second))
		}
	}
}

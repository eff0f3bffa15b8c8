package events

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clock is a log whose time the test moves.
func clock(lim Limits) (*Log, *time.Time) {
	l := NewWithLimits(64, lim)
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	return l, &now
}

const mac1, ip1 = "52:54:00:bd:00:01", "10.0.0.11"

// playBoot plays the events of one boot, the way the servers report them: the
// loader's first file before anything joins its address to its MAC.
func playBoot(l *Log, now *time.Time, mac, ip string, upTo Stage) {
	step := func(e Event) {
		*now = now.Add(2 * time.Second)
		l.Record(e)
	}
	evs := []Event{
		{MAC: mac, Stage: StageDHCP, Firmware: "bios", Hostname: "node01"},
		{IP: ip, Stage: StageLoader},
		{MAC: mac, IP: ip, Stage: StageConfig, Image: "trixie", Generation: 3},
		{IP: ip, Stage: StageKernel},
		{IP: ip, Stage: StageInitrd},
		{IP: ip, Stage: StageMount, Image: "trixie", Generation: 3},
		{MAC: mac, IP: ip, Stage: StageRoot},
		{MAC: mac, IP: ip, Stage: StageUp},
	}
	for _, e := range evs {
		step(e)
		if e.Stage == upTo {
			return
		}
	}
}

func stages(b *Boot) string {
	var s []string
	for _, a := range b.Stages {
		s = append(s, string(a.Stage))
	}
	return strings.Join(s, " ")
}

func TestBootJoinsAddressAndMAC(t *testing.T) {
	l, now := clock(Limits{})
	playBoot(l, now, mac1, ip1, StageUp)
	n, ok := l.Node(mac1)
	if !ok {
		t.Fatal("no record")
	}
	if got := stages(n.Current()); got != "dhcp loader config kernel initrd root up" {
		t.Errorf("stages: %s", got)
	}
	if n.IP != ip1 || n.Hostname != "node01" || n.Firmware != "bios" || n.Image != "trixie" || n.Generation != 3 || n.Stage != StageUp {
		t.Errorf("record: %+v", n)
	}
	if d := n.LastBootDuration(); d != 14*time.Second {
		t.Errorf("boot took %v, want 14s (7 steps of 2s from dhcp to up)", d)
	}
	// The same node is found by address and hostname.
	for _, key := range []string{ip1, "node01", "52-54-00-BD-00-01"} {
		if m, ok := l.Node(key); !ok || m.MAC != mac1 {
			t.Errorf("Node(%q) = %v, %v", key, m.MAC, ok)
		}
	}
	k := l.Counters()
	if k.BootSeconds[1] != 1 || k.BootSecondsSum != 14 || k.Lost != 0 {
		t.Errorf("counters: %+v", k)
	}
}

func TestRepeatedDHCPIsOneBoot(t *testing.T) {
	l, now := clock(Limits{})
	for range 3 { // port 67, 4011, the loader's own
		*now = now.Add(time.Second)
		l.Record(Event{MAC: mac1, Stage: StageDHCP})
	}
	n, _ := l.Node(mac1)
	if len(n.Boots) != 1 || stages(n.Current()) != "dhcp" {
		t.Errorf("boots: %+v", n.Boots)
	}
}

// TestChainedIPXEIsOneBoot: PXE firmware fetches iPXE (the loader stage),
// and iPXE asks DHCP again; that is the same boot. A DHCP after the loader
// that is not iPXE's is a new one.
func TestChainedIPXEIsOneBoot(t *testing.T) {
	l, now := clock(Limits{})
	for _, e := range []Event{
		{MAC: mac1, Stage: StageDHCP},
		{MAC: mac1, IP: ip1, Stage: StageLoader},
		{MAC: mac1, Stage: StageDHCP, Chained: true},
		{MAC: mac1, IP: ip1, Stage: StageConfig},
	} {
		*now = now.Add(time.Second)
		l.Record(e)
	}
	n, _ := l.Node(mac1)
	if len(n.Boots) != 1 || stages(n.Current()) != "dhcp loader config" {
		t.Errorf("chained iPXE: boots %+v", n.Boots)
	}
	*now = now.Add(time.Second)
	l.Record(Event{MAC: mac1, IP: ip1, Stage: StageLoader})
	*now = now.Add(time.Second)
	l.Record(Event{MAC: mac1, Stage: StageDHCP, Chained: true}) // after config: a new boot
	if n, _ := l.Node(mac1); len(n.Boots) != 2 {
		t.Errorf("iPXE DHCP after the config stage: boots %+v", n.Boots)
	}
}

// TestBootBootdDidNotSeeStart: bootd restarted while a node fetched its
// kernel, so the new boot's first stages are not in its records; the
// node's root and up reports still make a new boot, not nothing.
func TestBootBootdDidNotSeeStart(t *testing.T) {
	l, now := clock(Limits{})
	playBoot(l, now, mac1, ip1, StageUp)
	for _, s := range []Stage{StageRoot, StageUp} {
		*now = now.Add(10 * time.Second)
		l.Record(Event{MAC: mac1, IP: ip1, Stage: s})
	}
	n, _ := l.Node(mac1)
	if len(n.Boots) != 2 || stages(&n.Boots[1]) != "root up" || n.Stage != StageUp || !n.Since.Equal(*now) {
		t.Errorf("boots %+v, stage %s since %v", n.Boots, n.Stage, n.Since)
	}
	// A boot stuck before up, then a root report again: that one was lost.
	*now = now.Add(time.Minute)
	l.Record(Event{MAC: mac1, IP: ip1, Stage: StageDHCP})
	*now = now.Add(time.Second)
	l.Record(Event{MAC: mac1, IP: ip1, Stage: StageRoot})
	*now = now.Add(time.Second)
	l.Record(Event{MAC: mac1, IP: ip1, Stage: StageRoot})
	if n, _ := l.Node(mac1); len(n.Boots) != 4 || stages(&n.Boots[2]) != "dhcp root lost" {
		t.Errorf("boots %+v", n.Boots)
	}
}

func TestRestartBeforeUpIsLost(t *testing.T) {
	l, now := clock(Limits{})
	playBoot(l, now, mac1, ip1, StageKernel)
	playBoot(l, now, mac1, ip1, StageUp)
	n, _ := l.Node(mac1)
	if len(n.Boots) != 2 {
		t.Fatalf("boots: %d", len(n.Boots))
	}
	if got := stages(&n.Boots[0]); got != "dhcp loader config kernel lost" {
		t.Errorf("first boot: %s", got)
	}
	if n.Stage != StageUp || l.Counters().Lost != 1 {
		t.Errorf("stage %s, lost %d", n.Stage, l.Counters().Lost)
	}
}

func TestSweepMarksStalledBootLost(t *testing.T) {
	l, now := clock(Limits{LostAfter: time.Minute})
	playBoot(l, now, mac1, ip1, StageRoot)
	*now = now.Add(59 * time.Second)
	l.Sweep()
	if n, _ := l.Node(mac1); n.Stage != StageRoot {
		t.Fatalf("lost too early: %s", n.Stage)
	}
	*now = now.Add(2 * time.Second)
	l.Sweep()
	n, _ := l.Node(mac1)
	if n.Stage != StageLost || !strings.Contains(n.Current().Last().Detail, "no up") {
		t.Errorf("after the timeout: %s %q", n.Stage, n.Current().Last().Detail)
	}
	// An up node is not lost by silence; the next boot starts anew.
	playBoot(l, now, mac1, ip1, StageUp)
	*now = now.Add(time.Hour)
	l.Sweep()
	if n, _ := l.Node(mac1); n.Stage != StageUp || len(n.Boots) != 2 {
		t.Errorf("up node: %s, %d boots", n.Stage, len(n.Boots))
	}
}

func TestAddressesWithoutMACWaitThenGo(t *testing.T) {
	l, now := clock(Limits{Pending: 2})
	l.Record(Event{IP: "10.0.0.50", Stage: StageLoader})
	l.Record(Event{IP: "10.0.0.51", Stage: StageLoader})
	l.Record(Event{IP: "10.0.0.52", Stage: StageLoader}) // a third address: no room
	if len(l.Nodes()) != 0 || l.Counters().Unattributed != 1 {
		t.Fatalf("nodes %d, unattributed %d", len(l.Nodes()), l.Counters().Unattributed)
	}
	*now = now.Add(6 * time.Minute)
	l.Sweep()
	if len(l.pending) != 0 || l.Counters().Unattributed != 3 {
		t.Errorf("pending %d, unattributed %d", len(l.pending), l.Counters().Unattributed)
	}
	if l.Console("10.0.0.50", "hello\n", time.Time{}) {
		t.Error("a line from an unknown address was kept")
	}
}

func TestNodeRecordsAreBounded(t *testing.T) {
	l, now := clock(Limits{Nodes: 3, Boots: 2})
	for i := range 5 {
		*now = now.Add(time.Second)
		l.Record(Event{MAC: fmt.Sprintf("52:54:00:00:00:%02x", i), IP: fmt.Sprintf("10.0.0.%d", i), Stage: StageDHCP})
	}
	got := l.Nodes()
	if len(got) != 3 || got[0].MAC != "52:54:00:00:00:02" || l.Counters().Evicted != 2 {
		t.Errorf("kept %d nodes from %v, evicted %d", len(got), got[0].MAC, l.Counters().Evicted)
	}
	if _, ok := l.MACOf("10.0.0.0"); ok {
		t.Error("an evicted node's address still joined")
	}
	for range 4 {
		playBoot(l, now, mac1, ip1, StageUp)
	}
	if n, _ := l.Node(mac1); len(n.Boots) != 2 {
		t.Errorf("boots kept: %d", len(n.Boots))
	}
}

func TestConsoleIsBoundedAndClean(t *testing.T) {
	l, now := clock(Limits{Lines: 10, LineBytes: 1000})
	playBoot(l, now, mac1, ip1, StageConfig)
	// A line split over datagrams is joined.
	l.Console(ip1, "Linux version 6.12", time.Time{})
	l.Console(ip1, ".117\nsecond\x1b[2J line\r\n", time.Time{})
	n, _ := l.Node(mac1)
	if len(n.Console) != 2 || n.Console[0].Text != "Linux version 6.12.117" || n.Console[1].Text != "second?[2J line" {
		t.Fatalf("console: %q", n.Console)
	}
	// A flood keeps the last lines within both bounds.
	for i := range 10000 {
		l.Console(ip1, fmt.Sprintf("%05d %s\n", i, strings.Repeat("x", 94)), time.Time{})
	}
	l.Console(ip1, strings.Repeat("y", 1<<20), time.Time{}) // no newline: held, cut
	l.Syslog(ip1, "sshd[1]: started", time.Time{})
	n, _ = l.Node(mac1)
	size := 0
	for _, ln := range n.Console {
		size += len(ln.Text)
	}
	if len(n.Console) > 10 || size > 1000 || !strings.HasPrefix(n.Console[len(n.Console)-1].Text, "09999 ") {
		t.Errorf("console: %d lines, %d bytes, last %.10q", len(n.Console), size, n.Console[len(n.Console)-1].Text)
	}
	if len(l.nodes[mac1].partial) > maxLine {
		t.Errorf("partial line held: %d bytes", len(l.nodes[mac1].partial))
	}
	if len(n.Syslog) != 1 || n.LastLine().Text != "sshd[1]: started" {
		t.Errorf("syslog: %q, last line %q", n.Syslog, n.LastLine().Text)
	}
}

func TestRecordsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "nodes.json")
	l, now := clock(Limits{})
	playBoot(l, now, mac1, ip1, StageUp)
	l.Console(ip1, "login:\n", time.Time{})
	if err := l.Save(path); err != nil {
		t.Fatal(err)
	}
	m := NewWithLimits(64, Limits{})
	if err := m.Load(path); err != nil {
		t.Fatal(err)
	}
	n, ok := m.Node(ip1)
	if !ok || n.Stage != StageUp || stages(n.Current()) != "dhcp loader config kernel initrd root up" || len(n.Console) != 1 {
		t.Fatalf("after restart: %+v", n)
	}
	// The next boot goes on from the record.
	m.now = l.now
	playBoot(m, now, mac1, ip1, StageLoader)
	if n, _ := m.Node(mac1); len(n.Boots) != 2 {
		t.Errorf("boots after restart: %d", len(n.Boots))
	}
	// A damaged file is moved aside; bootd starts empty.
	os.WriteFile(path, []byte(`{"version":1,"nodes":[`), 0o644)
	e := NewWithLimits(64, Limits{})
	if err := e.Load(path); err == nil || len(e.Nodes()) != 0 {
		t.Errorf("damaged file: %v, %d nodes", err, len(e.Nodes()))
	}
	if _, err := os.Stat(path + ".bad"); err != nil {
		t.Errorf("not moved aside: %v", err)
	}
}

// Package events is where every bootd server reports what a node did (DHCP
// answered, a file fetched, the root mounted, the system up) and where
// everyone who shows a node reads it: the status page, the JSON API, the
// metrics, `bootd nodes` and the lab all read the one record per node kept
// here, never bootd's log lines.
//
// Servers see a node by different names: DHCP by its MAC, TFTP and NFS by
// its IP address. Events that carry both (the PXE exchange on port 4011,
// the pxelinux config name, the init's report) join the two, so that
// events carrying an address only land on the right node; what arrives from
// an address not joined yet waits a short while for its MAC.
//
// Everything here is bounded: the number of nodes, the boots kept per
// node, the console and syslog lines per node, the events waiting for a
// MAC, and the history of recent events.
package events

import (
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bootd/bootd/boot"
)

// Stage names a step of a node's boot.
type Stage string

// FetchStage is the stage that fetching a boot file of kind k marks, over
// TFTP or HTTP.
func FetchStage(k boot.Kind) Stage {
	switch k {
	case boot.KindLoader:
		return StageLoader
	case boot.KindConfig:
		return StageConfig
	case boot.KindKernel:
		return StageKernel
	case boot.KindInitrd:
		return StageInitrd
	}
	return ""
}

// The stages of a boot, in the order a node passes them; Lost ends a boot
// that stopped short of Up (no report within Limits.LostAfter of its last
// stage, or a node that started over from DHCP).
const (
	StageDHCP   Stage = "dhcp"   // bootd answered the PXE firmware
	StageLoader Stage = "loader" // the first boot-loader file fetched
	StageConfig Stage = "config" // the loader fetched its generated config (generation pinned)
	StageKernel Stage = "kernel" // the kernel fetched
	StageInitrd Stage = "initrd" // the initrd fetched
	StageRoot   Stage = "root"   // the init reports the root mounted
	StageUp     Stage = "up"     // the booted system reports multi-user
	StageDown   Stage = "down"   // the booted system reports an orderly shutdown
	StageLost   Stage = "lost"   // bootd gave up waiting for the next stage
)

// Stages lists the stages in boot order.
var Stages = []Stage{StageDHCP, StageLoader, StageConfig, StageKernel, StageInitrd, StageRoot, StageUp, StageDown, StageLost}

// StageMount is not a stage of the boot: the NFS server saw a node mount
// its export. It pins the generation a node runs and counts as a sign of
// life.
const StageMount Stage = "mount"

func (s Stage) order() int {
	for i, t := range Stages {
		if t == s {
			return i
		}
	}
	return -1
}

// Valid reports whether s is a stage of the boot.
func (s Stage) Valid() bool { return s.order() >= 0 }

// Event is one thing a node did.
type Event struct {
	Time       time.Time `json:"time"`
	MAC        string    `json:"mac,omitempty"` // empty where the protocol does not carry it (TFTP, NFS)
	IP         string    `json:"ip,omitempty"`
	Stage      Stage     `json:"stage"`
	Detail     string    `json:"detail,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	Firmware   string    `json:"firmware,omitempty"`   // DHCP: bios, uefi, ...
	Image      string    `json:"image,omitempty"`      // config, mount, root: the image...
	Generation int       `json:"generation,omitempty"` // ...and the generation pinned
	// Chained marks a DHCP from iPXE: right after a loader stage it is
	// the iPXE that loader chained to, still in the same boot.
	Chained bool `json:"chained,omitempty"`
}

// At is when a boot reached a stage.
type At struct {
	Stage  Stage     `json:"stage"`
	Time   time.Time `json:"time"`
	Detail string    `json:"detail,omitempty"`
}

// Boot is one boot of a node, from its first stage to its last.
type Boot struct {
	Start  time.Time `json:"start"`
	Stages []At      `json:"stages"`
}

// Last is the stage the boot reached last.
func (b *Boot) Last() At {
	if len(b.Stages) == 0 {
		return At{}
	}
	return b.Stages[len(b.Stages)-1]
}

// Reached returns when the boot reached s.
func (b *Boot) Reached(s Stage) (time.Time, bool) {
	for _, a := range b.Stages {
		if a.Stage == s {
			return a.Time, true
		}
	}
	return time.Time{}, false
}

// Duration is the time from the boot's first stage to up, or 0.
func (b *Boot) Duration() time.Duration {
	if t, ok := b.Reached(StageUp); ok && len(b.Stages) > 0 {
		return t.Sub(b.Stages[0].Time)
	}
	return 0
}

func (b *Boot) over() bool {
	s := b.Last().Stage
	return s == StageDown || s == StageLost
}

// Line is a console or syslog line a node sent.
type Line struct {
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// Node is what bootd knows about one machine.
type Node struct {
	MAC        string    `json:"mac"`
	IP         string    `json:"ip,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	Firmware   string    `json:"firmware,omitempty"`
	Image      string    `json:"image,omitempty"`
	Generation int       `json:"generation,omitempty"`
	Stage      Stage     `json:"stage"`
	Since      time.Time `json:"since"`     // when it reached Stage
	LastSeen   time.Time `json:"last_seen"` // any event, report or line
	Boots      []Boot    `json:"boots"`     // oldest first; the last is the current one
	Console    []Line    `json:"console,omitempty"`
	Syslog     []Line    `json:"syslog,omitempty"`

	consoleBytes, syslogBytes int
	partial                   string // a console line not yet ended
}

// Current is the node's latest boot.
func (n *Node) Current() *Boot {
	if len(n.Boots) == 0 {
		return nil
	}
	return &n.Boots[len(n.Boots)-1]
}

// LastBootDuration is how long the latest boot that reached up took.
func (n *Node) LastBootDuration() time.Duration {
	for i := len(n.Boots) - 1; i >= 0; i-- {
		if d := n.Boots[i].Duration(); d > 0 {
			return d
		}
	}
	return 0
}

// LastLine is the node's latest console or syslog line.
func (n *Node) LastLine() Line {
	var l Line
	if len(n.Console) > 0 {
		l = n.Console[len(n.Console)-1]
	}
	if len(n.Syslog) > 0 && !n.Syslog[len(n.Syslog)-1].Time.Before(l.Time) {
		l = n.Syslog[len(n.Syslog)-1]
	}
	return l
}

// Limits bound what the log keeps. Zero fields take the defaults.
type Limits struct {
	Nodes     int           // node records; the one seen longest ago goes first (4096)
	Boots     int           // boots kept per node (5)
	Lines     int           // console lines and syslog lines kept per node, each (500)
	LineBytes int           // bytes of console and of syslog kept per node, each (128 KiB)
	LostAfter time.Duration // a boot with no next stage for this long is lost (10 min)
	Pending   int           // addresses whose events wait for their MAC (1024)
}

func (l Limits) withDefaults() Limits {
	if l.Nodes <= 0 {
		l.Nodes = 4096
	}
	if l.Boots <= 0 {
		l.Boots = 5
	}
	if l.Lines <= 0 {
		l.Lines = 500
	}
	if l.LineBytes <= 0 {
		l.LineBytes = 128 << 10
	}
	if l.LostAfter <= 0 {
		l.LostAfter = 10 * time.Minute
	}
	if l.Pending <= 0 {
		l.Pending = 1024
	}
	return l
}

// maxLine caps one console or syslog line.
const maxLine = 2048

// pendingFor is how long events from an address wait for its MAC; a
// loader's first file comes before the config name that joins the two.
const pendingFor = 5 * time.Minute

// Log keeps the node records and the recent events. The zero value is not
// usable; use New. A nil *Log records nothing, so servers can run without
// one.
type Log struct {
	lim Limits

	mu      sync.Mutex
	ring    []Event
	next    int
	full    bool
	subs    map[chan Event]struct{}
	nodes   map[string]*Node // by MAC
	byIP    map[string]string
	pending map[string][]Event // by IP, waiting for a MAC
	dirty   bool
	stats   Counters
	now     func() time.Time
}

// Counters are what the log counted, for the metrics.
type Counters struct {
	Unattributed uint64 // events and lines from addresses no node is known at
	Evicted      uint64 // node records dropped to stay within Limits.Nodes
	LinesDropped uint64 // lines dropped or cut to stay within the per-node bounds
	Lost         uint64 // boots that ended lost
	// BootSeconds counts boots that reached up by their duration (first
	// stage to up): BootSeconds[i] those of at most BootBuckets[i]
	// seconds, the last those longer than every bucket.
	BootSeconds    [len(BootBuckets) + 1]uint64
	BootSecondsSum float64
}

// BootBuckets are the upper bounds, in seconds, of Counters.BootSeconds.
var BootBuckets = [...]float64{10, 20, 30, 45, 60, 90, 120, 180, 300, 600}

// New returns a log that keeps the last max events and the default limits.
func New(max int) *Log { return NewWithLimits(max, Limits{}) }

// NewWithLimits returns a log that keeps the last max events and node
// records within lim.
func NewWithLimits(max int, lim Limits) *Log {
	return &Log{lim: lim.withDefaults(), ring: make([]Event, max), subs: map[chan Event]struct{}{},
		nodes: map[string]*Node{}, byIP: map[string]string{}, pending: map[string][]Event{}, now: time.Now}
}

// normMAC returns mac in the one spelling records are keyed by, or "".
func normMAC(mac string) string {
	if mac == "" {
		return ""
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return ""
	}
	return hw.String()
}

// Record adds an event, stamping the time if unset. Subscribers that are
// not keeping up miss events rather than slow a server down.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.MAC = normMAC(e.MAC)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	for c := range l.subs {
		select {
		case c <- e:
		default:
		}
	}
	l.apply(e)
}

// apply updates the node records; l.mu is held.
func (l *Log) apply(e Event) {
	mac := e.MAC
	if mac == "" && e.IP != "" {
		mac = l.byIP[e.IP]
	}
	if mac == "" {
		if e.IP == "" {
			return
		}
		// Wait for the event that names the MAC of this address.
		if _, ok := l.pending[e.IP]; !ok && len(l.pending) >= l.lim.Pending {
			l.stats.Unattributed++
			return
		}
		if len(l.pending[e.IP]) >= 8 {
			l.stats.Unattributed++
			return
		}
		l.pending[e.IP] = append(l.pending[e.IP], e)
		return
	}
	n := l.node(mac)
	if e.IP != "" && e.IP != n.IP {
		if n.IP != "" && l.byIP[n.IP] == mac {
			delete(l.byIP, n.IP)
		}
		n.IP = e.IP
		l.byIP[e.IP] = mac
	}
	if e.IP != "" {
		if waiting := l.pending[e.IP]; waiting != nil {
			delete(l.pending, e.IP)
			for _, w := range waiting {
				if e.Time.Sub(w.Time) < pendingFor {
					w.MAC = mac
					l.update(n, w)
				}
			}
		}
	}
	l.update(n, e)
}

// node returns the record of mac, making one (and dropping the record
// seen longest ago if there are too many).
func (l *Log) node(mac string) *Node {
	if n := l.nodes[mac]; n != nil {
		return n
	}
	if len(l.nodes) >= l.lim.Nodes {
		var oldest *Node
		for _, o := range l.nodes {
			if oldest == nil || o.LastSeen.Before(oldest.LastSeen) {
				oldest = o
			}
		}
		l.forget(oldest)
		l.stats.Evicted++
	}
	n := &Node{MAC: mac}
	l.nodes[mac] = n
	return n
}

func (l *Log) forget(n *Node) {
	delete(l.nodes, n.MAC)
	if n.IP != "" && l.byIP[n.IP] == n.MAC {
		delete(l.byIP, n.IP)
	}
}

// update applies one event to a node's record; l.mu is held.
func (l *Log) update(n *Node, e Event) {
	l.dirty = true
	if e.Time.After(n.LastSeen) {
		n.LastSeen = e.Time
	}
	if e.Hostname != "" {
		n.Hostname = e.Hostname
	}
	if e.Firmware != "" {
		n.Firmware = e.Firmware
	}
	if e.Image != "" {
		n.Image, n.Generation = e.Image, e.Generation
	}
	if !e.Stage.Valid() {
		return
	}
	b := n.Current()
	switch {
	case b == nil || b.over():
		b = l.newBoot(n, e.Time)
	case e.Stage == StageRoot || e.Stage == StageUp:
		// The node itself says each of these once per boot: said again,
		// it is a new boot whose first stages bootd did not see (it was
		// restarting while the node fetched its kernel).
		if _, again := b.Reached(e.Stage); again {
			if _, up := b.Reached(StageUp); !up {
				l.reach(n, b, At{Stage: StageLost, Time: e.Time, Detail: "started over: reported " + string(e.Stage) + " again"})
			}
			b = l.newBoot(n, e.Time)
		}
	case e.Stage == StageDHCP && e.Chained && b.Last().Stage == StageLoader:
		// The iPXE that the loader stage chained to asks again: the
		// same boot.
	case e.Stage == StageDHCP && b.Last().Stage != StageDHCP:
		// Firmware asks again (port 67, then 4011; a loader that does
		// DHCP itself) within one boot; after any later stage, DHCP is a
		// new boot, and one that had not come up was lost.
		if _, up := b.Reached(StageUp); !up {
			l.reach(n, b, At{Stage: StageLost, Time: e.Time, Detail: "started over from DHCP"})
		}
		b = l.newBoot(n, e.Time)
	}
	if _, seen := b.Reached(e.Stage); seen {
		return
	}
	l.reach(n, b, At{Stage: e.Stage, Time: e.Time, Detail: e.Detail})
}

func (l *Log) newBoot(n *Node, t time.Time) *Boot {
	n.Boots = append(n.Boots, Boot{Start: t})
	if over := len(n.Boots) - l.lim.Boots; over > 0 {
		n.Boots = append([]Boot(nil), n.Boots[over:]...)
	}
	return n.Current()
}

func (l *Log) reach(n *Node, b *Boot, a At) {
	b.Stages = append(b.Stages, a)
	// A late event (a file fetched again) is kept in time order.
	sort.SliceStable(b.Stages, func(i, j int) bool { return b.Stages[i].Time.Before(b.Stages[j].Time) })
	last := b.Last()
	n.Stage, n.Since = last.Stage, last.Time
	switch a.Stage {
	case StageLost:
		l.stats.Lost++
	case StageUp:
		d := b.Duration().Seconds()
		i := 0
		for i < len(BootBuckets) && d > BootBuckets[i] {
			i++
		}
		l.stats.BootSeconds[i]++
		l.stats.BootSecondsSum += d
	}
}

// Sweep marks lost every boot that has waited longer than LostAfter for
// its next stage. Serve calls it every few seconds.
func (l *Log) Sweep() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, n := range l.nodes {
		b := n.Current()
		if b == nil || b.over() {
			continue
		}
		if last := b.Last(); last.Stage != StageUp && now.Sub(last.Time) > l.lim.LostAfter {
			l.dirty = true
			l.reach(n, b, At{Stage: StageLost, Time: now, Detail: "no " + string(next(last.Stage)) + " within " + l.lim.LostAfter.String() + " of " + string(last.Stage)})
		}
	}
	for ip, evs := range l.pending {
		if len(evs) > 0 && now.Sub(evs[len(evs)-1].Time) > pendingFor {
			delete(l.pending, ip)
			l.stats.Unattributed += uint64(len(evs))
		}
	}
}

func next(s Stage) Stage {
	if i := s.order(); i >= 0 && i+1 < len(Stages) {
		return Stages[i+1]
	}
	return s
}

// Console adds what a node's kernel console sent (netconsole: one or more
// lines per datagram, a line may span datagrams).
func (l *Log) Console(ip string, text string, t time.Time) bool {
	return l.lines(ip, text, t, true)
}

// Syslog adds one syslog line a node sent.
func (l *Log) Syslog(ip string, line string, t time.Time) bool {
	return l.lines(ip, line+"\n", t, false)
}

// lines adds text to a node's console or syslog; it reports false when no
// node is known at ip.
func (l *Log) lines(ip, text string, t time.Time, console bool) bool {
	if l == nil {
		return false
	}
	if t.IsZero() {
		t = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	mac := l.byIP[ip]
	n := l.nodes[mac]
	if n == nil {
		l.stats.Unattributed++
		return false
	}
	if t.After(n.LastSeen) {
		n.LastSeen = t
	}
	l.dirty = true
	if console {
		text = n.partial + text
		n.partial = ""
	}
	for text != "" {
		line, rest, ended := strings.Cut(text, "\n")
		if !ended && console {
			// The rest of the line comes in the next datagram.
			if len(line) > maxLine {
				line = line[:maxLine]
				l.stats.LinesDropped++
			}
			n.partial = line
			break
		}
		text = rest
		line = clean(line)
		if len(line) > maxLine {
			line = line[:maxLine]
			l.stats.LinesDropped++
		}
		if console {
			n.Console, n.consoleBytes = l.push(n.Console, n.consoleBytes, Line{t, line})
		} else {
			n.Syslog, n.syslogBytes = l.push(n.Syslog, n.syslogBytes, Line{t, line})
		}
	}
	return true
}

func (l *Log) push(lines []Line, size int, line Line) ([]Line, int) {
	lines = append(lines, line)
	size += len(line.Text)
	drop := 0
	for len(lines)-drop > l.lim.Lines || size > l.lim.LineBytes {
		size -= len(lines[drop].Text)
		drop++
		l.stats.LinesDropped++
	}
	if drop > 0 {
		// Copy now and then, not on every line, so that the backing
		// array does not grow without bound.
		lines = append(lines[:0:0], lines[drop:]...)
	}
	return lines, size
}

// clean makes a line safe to show: no control characters (a terminal
// escape or a carriage return cannot rewrite what an admin reads).
func clean(s string) string {
	s = strings.TrimRight(s, "\r")
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) < 0 {
		return strings.ToValidUTF8(s, "?")
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "?") {
		if r < 0x20 && r != '\t' || r == 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Quiet returns the nodes that are up and have not been heard from since
// the time given.
func (l *Log) Quiet(since time.Time) []Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Node
	for _, n := range l.nodes {
		if n.Stage == StageUp && n.LastSeen.Before(since) {
			out = append(out, Node{MAC: n.MAC, IP: n.IP, LastSeen: n.LastSeen})
		}
	}
	return out
}

// Alive notes that a node answered bootd.
func (l *Log) Alive(mac string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.nodes[normMAC(mac)]; n != nil && t.After(n.LastSeen) {
		n.LastSeen = t
		l.dirty = true
	}
}

// Lose ends a node's current boot as lost (a node that is up and stopped
// answering), unless it is over already.
func (l *Log) Lose(mac, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.nodes[normMAC(mac)]
	if n == nil {
		return
	}
	if b := n.Current(); b != nil && !b.over() {
		l.dirty = true
		l.reach(n, b, At{Stage: StageLost, Time: l.now(), Detail: why})
	}
}

// MACOf returns the MAC of the node last seen at ip.
func (l *Log) MACOf(ip string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mac, ok := l.byIP[ip]
	return mac, ok
}

// Nodes returns a copy of every node record (without their lines), by MAC.
func (l *Log) Nodes() []Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Node, 0, len(l.nodes))
	for _, n := range l.nodes {
		c := copyNode(n, false)
		// The summary's last line, without the whole log.
		if ll := n.LastLine(); ll.Text != "" {
			c.Console = []Line{ll}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}

// Node returns a copy of one node's record, found by MAC, IP or hostname.
func (l *Log) Node(key string) (Node, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mac := normMAC(key); mac != "" {
		key = mac
	} else if mac, ok := l.byIP[key]; ok {
		key = mac
	} else {
		for _, n := range l.nodes {
			if n.Hostname != "" && n.Hostname == key {
				key = n.MAC
				break
			}
		}
	}
	n, ok := l.nodes[key]
	if !ok {
		return Node{}, false
	}
	return copyNode(n, true), true
}

func copyNode(n *Node, lines bool) Node {
	c := *n
	c.Boots = make([]Boot, len(n.Boots))
	for i, b := range n.Boots {
		c.Boots[i] = Boot{Start: b.Start, Stages: append([]At(nil), b.Stages...)}
	}
	c.Console, c.Syslog = nil, nil
	if lines {
		c.Console = append([]Line(nil), n.Console...)
		c.Syslog = append([]Line(nil), n.Syslog...)
	}
	return c
}

// Counters returns what the log has turned away so far.
func (l *Log) Counters() Counters {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Recent returns the recorded events, oldest first.
func (l *Log) Recent() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]Event(nil), l.ring[:l.next]...)
	}
	return append(append([]Event(nil), l.ring[l.next:]...), l.ring[:l.next]...)
}

// Subscribe returns a channel of new events and a function to stop.
func (l *Log) Subscribe(buf int) (<-chan Event, func()) {
	c := make(chan Event, buf)
	l.mu.Lock()
	l.subs[c] = struct{}{}
	l.mu.Unlock()
	return c, func() {
		l.mu.Lock()
		delete(l.subs, c)
		l.mu.Unlock()
	}
}

// Package events is where every bootd server reports what a node did:
// DHCP answered, a file fetched, the root mounted. It keeps a bounded
// history in memory and fans events out to subscribers, so that a status
// page, metrics and tests all read one timeline per node.
package events

import (
	"sync"
	"time"
)

// Stage names a step of a node's boot.
type Stage string

const (
	StageDHCP   Stage = "dhcp"   // bootd answered the PXE firmware
	StageTFTP   Stage = "tftp"   // a boot file was fetched
	StageConfig Stage = "config" // the loader fetched its generated config (generation pinned)
	StageMount  Stage = "mount"  // the node mounted its root
)

// Event is one thing a node did.
type Event struct {
	Time   time.Time
	MAC    string // may be empty where the protocol does not carry it (TFTP, NFS)
	IP     string
	Stage  Stage
	Detail string
}

// Log records events. The zero value is not usable; use New. A nil *Log
// records nothing, so servers can be run without one.
type Log struct {
	mu   sync.Mutex
	ring []Event
	next int
	full bool
	subs map[chan Event]struct{}
}

// New returns a log that keeps the last max events.
func New(max int) *Log {
	return &Log{ring: make([]Event, max), subs: map[chan Event]struct{}{}}
}

// Record adds an event, stamping the time if unset. Subscribers that are
// not keeping up miss events rather than slow a server down.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
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

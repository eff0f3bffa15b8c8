// Package lograte bounds the log lines that clients on the cluster network
// can make bootd write. Every service logs per request (a DHCP answer, a
// boot file sent, an NFS connection), and everything on that network may
// be hostile: a loop fetching a small file over HTTP would otherwise fill
// the journal at the speed of the network.
//
// New wraps bootd's slog.Handler once, in cmd/bootd, so no service needs
// its own throttling: a line that names a client (an "ip", "client" or
// "mac" attribute, from the line or the logger's With) takes a token from
// that client's bucket and from the bucket all clients share. A line
// without a client (startup, the server's own failures) always passes.
// What was held back is counted, said on the client's next line that
// passes ("suppressed": N), and in Dropped for the metrics.
package lograte

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the lines clients may log.
type Limits struct {
	// PerClient is the lines per second one client's bucket refills at
	// (default 1), Burst how many it holds (default 30: a node's whole
	// boot, every stage, logs fewer).
	PerClient float64
	Burst     int
	// Total is the lines per second of all clients together (default
	// 200), with a burst of ten times that.
	Total float64
}

func (l *Limits) defaults() {
	if l.PerClient <= 0 {
		l.PerClient = 1
	}
	if l.Burst <= 0 {
		l.Burst = 30
	}
	if l.Total <= 0 {
		l.Total = 200
	}
}

// maxClients bounds the clients remembered (about 100 bytes each): past
// it, a flood of forged addresses shares one bucket.
var maxClients = 1 << 16

// keys name a client in a log line, most specific first.
var keys = []string{"ip", "client", "mac"}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed uint64
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type state struct {
	lim     Limits
	now     func() time.Time
	mu      sync.Mutex
	total   bucket
	clients map[string]*bucket
	swept   time.Time
	dropped atomic.Uint64
}

// Handler is the bounding slog.Handler.
type Handler struct {
	next   slog.Handler
	st     *state
	client string // from WithAttrs, "" if none
	rank   int    // of client's key in keys
}

// New wraps next.
func New(next slog.Handler, l Limits) *Handler {
	l.defaults()
	return &Handler{next: next, st: &state{lim: l, now: time.Now, clients: map[string]*bucket{},
		total: bucket{tokens: 10 * l.Total}}}
}

// Dropped is how many lines were held back so far.
func (h *Handler) Dropped() uint64 { return h.st.dropped.Load() }

// Enabled reports the wrapped handler's level.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// WithAttrs keeps the client a logger's With named.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	c, rank := h.client, h.rank
	if k, r := clientOf(as); k != "" && (c == "" || r < rank) {
		c, rank = k, r
	}
	return &Handler{next: h.next.WithAttrs(as), st: h.st, client: c, rank: rank}
}

// WithGroup: attributes in a group do not name the client.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), st: h.st, client: h.client, rank: h.rank}
}

// Handle writes r if its client (if any) has a token left.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	c := h.client
	if c == "" {
		var as []slog.Attr
		r.Attrs(func(a slog.Attr) bool { as = append(as, a); return true })
		c, _ = clientOf(as)
	}
	if c == "" {
		return h.next.Handle(ctx, r)
	}
	n, ok := h.st.admit(c)
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Uint64("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

// admit takes a token for client c; it returns how many of c's lines were
// held back since its last line that passed.
func (s *state) admit(c string) (uint64, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.swept) > time.Minute {
		s.sweep(now)
	}
	b := s.clients[c]
	if b == nil {
		if len(s.clients) >= maxClients {
			s.sweep(now)
		}
		if len(s.clients) >= maxClients {
			c = "" // the shared bucket of a flood
			b = s.clients[c]
		}
		if b == nil {
			b = &bucket{tokens: float64(s.lim.Burst), last: now}
			s.clients[c] = b
		}
	}
	// The client's own bucket first: a client past its share must not
	// spend what other clients' lines need.
	if !b.take(now, s.lim.PerClient, float64(s.lim.Burst)) || !s.total.take(now, s.lim.Total, 10*s.lim.Total) {
		b.suppressed++
		s.dropped.Add(1)
		return 0, false
	}
	n := b.suppressed
	b.suppressed = 0
	return n, true
}

// sweep forgets clients whose bucket is full again and who have nothing
// held back to report.
func (s *state) sweep(now time.Time) {
	s.swept = now
	full := float64(s.lim.Burst)
	for c, b := range s.clients {
		if b.suppressed == 0 && b.tokens+now.Sub(b.last).Seconds()*s.lim.PerClient >= full {
			delete(s.clients, c)
		}
	}
}

// clientOf finds the attribute naming a client; an address with a port
// ("10.0.0.5:871") is the host's.
func clientOf(as []slog.Attr) (string, int) {
	for rank, k := range keys {
		for _, a := range as {
			if a.Key != k {
				continue
			}
			v := a.Value.Resolve().String()
			if ap, err := netip.ParseAddrPort(v); err == nil {
				return ap.Addr().String(), rank
			}
			if v != "" {
				return v, rank
			}
		}
	}
	return "", 0
}

package tftp

import (
	"net/netip"
	"sync"
	"time"
)

// Everything on the cluster network may be hostile, and a TFTP request
// is one unauthenticated UDP packet that makes bootd open a socket and
// send a block (over and over, until an ACK that may never come). The
// limiter bounds what strangers can make bootd hold and send: transfers
// in all and per source address, and the rate of new requests per source
// (a token bucket), which also bounds how far bootd can be used to
// amplify traffic towards a forged source address.

// Limits bound the TFTP server's resources. Zero fields take the
// defaults.
type Limits struct {
	// Transfers in progress at once, from everyone (default 1024).
	Transfers int
	// Transfers in progress at once from one address (default 8; PXE
	// firmware and loaders fetch one file at a time).
	PerClient int
	// Requests a second from one address, sustained (default 20), with
	// bursts of twice that.
	Rate float64
}

func (l *Limits) defaults() {
	if l.Transfers <= 0 {
		l.Transfers = 1024
	}
	if l.PerClient <= 0 {
		l.PerClient = 8
	}
	if l.Rate <= 0 {
		l.Rate = 20
	}
}

// verdict is what the limiter says of a new request.
type verdict int

const (
	admitted  verdict = iota
	busy              // too many transfers from this address: answer with an error
	full              // every transfer slot taken: drop, the client's retransmission queues it
	throttled         // over the request rate: drop without an answer
)

// maxSources bounds the addresses the limiter remembers (about 100 bytes
// each).
var maxSources = 1 << 16

type client struct {
	active int
	tokens float64
	last   time.Time
}

type limiter struct {
	lim   Limits
	mu    sync.Mutex
	total int
	srcs  map[netip.Addr]*client
	swept time.Time
}

func newLimiter(l Limits) *limiter {
	l.defaults()
	return &limiter{lim: l, srcs: map[netip.Addr]*client{}}
}

// admit decides on a request from ip at now. An admitted request holds a
// transfer slot until release is called.
func (l *limiter) admit(ip netip.Addr, now time.Time) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > 10*time.Second {
		l.sweep(now)
	}
	s := l.srcs[ip]
	if s == nil && len(l.srcs) >= maxSources {
		// A flood from forged addresses between sweeps: sweep early, and
		// while the table is still full, new addresses wait.
		l.sweep(now)
		if len(l.srcs) >= maxSources {
			return throttled
		}
	}
	if s == nil {
		s = &client{tokens: 2 * l.lim.Rate, last: now}
		l.srcs[ip] = s
	}
	s.tokens = min(2*l.lim.Rate, s.tokens+now.Sub(s.last).Seconds()*l.lim.Rate)
	s.last = now
	if s.tokens < 1 {
		return throttled
	}
	s.tokens--
	if s.active >= l.lim.PerClient {
		return busy
	}
	if l.total >= l.lim.Transfers {
		// A storm, not one client misbehaving: an error would end the
		// boot of a node that only came at a busy moment (pxelinux gives
		// up on an ERROR), where silence makes it ask again in a second
		// or two: a queue, not a cliff.
		return full
	}
	l.total++
	s.active++
	return admitted
}

func (l *limiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if s := l.srcs[ip]; s != nil {
		s.active--
	}
}

// sweep forgets sources with no transfer whose bucket has refilled, so a
// flood from forged addresses leaves nothing behind.
func (l *limiter) sweep(now time.Time) {
	l.swept = now
	for ip, s := range l.srcs {
		// A bucket refills from empty in 2 s.
		if s.active == 0 && now.Sub(s.last) > 2*time.Second {
			delete(l.srcs, ip)
		}
	}
}

// Stats are the server's current load, for tests and the status API.
type Stats struct {
	Transfers int // in progress
	Sources   int // addresses the limiter remembers
}

// Stats returns the server's current load.
func (s *Server) Stats() Stats {
	s.limit.mu.Lock()
	defer s.limit.mu.Unlock()
	return Stats{Transfers: s.limit.total, Sources: len(s.limit.srcs)}
}

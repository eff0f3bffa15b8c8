package dhcp

import (
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the DHCP server answers and what it ignores, for
// Prometheus. A nil *Metrics counts nothing.
//
// Every label value comes from the fixed sets below, never from a request:
// a label per MAC or address would let any machine on the cluster network
// grow bootd's memory (and every scrape) without bound.
type Metrics struct {
	replies [numModes][numReplies]prometheus.Counter
	ignored [numModes][numReasons]prometheus.Counter
	leases  prometheus.Gauge
}

// mode is which server answered: a full server's port-4011 follow-ups go
// through its Proxy, and still count as full.
type mode uint8

const (
	modeProxy mode = iota
	modeFull
	numModes
)

var modeNames = [numModes]string{modeProxy: "proxy", modeFull: "full"}

type replyKind uint8

const (
	replyOffer replyKind = iota
	replyAck
	replyNak
	numReplies
)

var replyNames = [numReplies]string{replyOffer: "offer", replyAck: "ack", replyNak: "nak"}

// reason is why a request got no answer.
type reason uint8

const (
	// reasonMalformed: undecodable, not a BOOTREQUEST, or no 6-byte MAC.
	reasonMalformed reason = iota
	// reasonRelayRefused: relayed by a giaddr not in dhcp.relays.
	reasonRelayRefused
	// reasonNotPXE: no "PXEClient" class (proxy mode answers only PXE).
	reasonNotPXE
	// reasonUnsupportedArch: a PXE client without a loader bootd serves.
	reasonUnsupportedArch
	// reasonUnknownNode: not in the node table, with unknown_nodes: ignore.
	reasonUnknownNode
	// reasonNoAddress: full mode had no address left to offer.
	reasonNoAddress
	// reasonNotOurs: meant for another server (a proxy's REQUEST on port
	// 67, a REQUEST naming another server or another network).
	reasonNotOurs
	// reasonOther: anything else (an unexpected message type, a reply
	// that could not be built).
	reasonOther
	numReasons
)

var reasonNames = [numReasons]string{
	reasonMalformed:       "malformed",
	reasonRelayRefused:    "relay_refused",
	reasonNotPXE:          "not_pxe",
	reasonUnsupportedArch: "unsupported_arch",
	reasonUnknownNode:     "unknown_node",
	reasonNoAddress:       "no_address",
	reasonNotOurs:         "not_ours",
	reasonOther:           "other",
}

// NewMetrics makes the DHCP collectors and registers them with reg (if
// reg is nil, they are made and not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	replies := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_dhcp_replies_total",
		Help: "DHCP replies sent, by server mode and reply type.",
	}, []string{"mode", "reply"})
	ignored := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_dhcp_ignored_total",
		Help: "DHCP requests left unanswered, by server mode and reason.",
	}, []string{"mode", "reason"})
	m := &Metrics{leases: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "bootd_dhcp_leases",
		Help: "Leases the full DHCP server holds, offered ones included, as its lease table reports them.",
	})}
	// Every series exists from the start, at zero: a rate over a series
	// that appears only with its first event misses that event.
	for md := range numModes {
		for r := range numReplies {
			m.replies[md][r] = replies.WithLabelValues(modeNames[md], replyNames[r])
		}
		for r := range numReasons {
			m.ignored[md][r] = ignored.WithLabelValues(modeNames[md], reasonNames[r])
		}
	}
	if reg != nil {
		reg.MustRegister(replies, ignored, m.leases)
	}
	return m
}

// replied counts a reply of type mt sent.
func (m *Metrics) replied(md mode, mt dhcpv4.MessageType) {
	if m == nil {
		return
	}
	switch mt {
	case dhcpv4.MessageTypeOffer:
		m.replies[md][replyOffer].Inc()
	case dhcpv4.MessageTypeAck:
		m.replies[md][replyAck].Inc()
	case dhcpv4.MessageTypeNak:
		m.replies[md][replyNak].Inc()
	}
}

// ignore counts a request left unanswered.
func (m *Metrics) ignore(md mode, r reason) {
	if m == nil {
		return
	}
	m.ignored[md][r].Inc()
}

// setLeases records the size of the lease table.
func (m *Metrics) setLeases(n int) {
	if m == nil {
		return
	}
	m.leases.Set(float64(n))
}

// firmwareReason tells pxeFirmware's two refusals apart: a client that is
// not PXE at all, or a PXE client bootd has no loader for.
func firmwareReason(req *dhcpv4.DHCPv4) reason {
	if c := req.ClassIdentifier(); !strings.HasPrefix(c, "PXEClient") && !strings.HasPrefix(c, "HTTPClient") {
		return reasonNotPXE
	}
	return reasonUnsupportedArch
}

package syslog

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the messages kept and what was turned away, for
// Prometheus. A nil *Metrics counts nothing.
//
// Drops are labelled by reason, never by sender: a label per address
// would let forged UDP sources grow bootd's memory (and every scrape)
// without bound.
type Metrics struct {
	lines, bytes prometheus.Counter
	dropped      [numDrops]prometheus.Counter
	conns        prometheus.Gauge
}

// drop is why a message, or a connection, was not kept in full.
type dropReason uint8

const (
	// dropTooLong: a message cut to MaxLine (its rest thrown away).
	dropTooLong dropReason = iota
	// dropFrameTooLong: an octet count over 1 MiB, not syslog; the
	// connection is closed.
	dropFrameTooLong
	// dropNotAllowed: a datagram or connection from outside Allow.
	dropNotAllowed
	// dropTooManyConns: a connection over Conns or ConnsPerSource.
	dropTooManyConns
	// dropWriteFailed: a message lost to a failed write or rotation.
	dropWriteFailed
	numDrops
)

var dropNames = [numDrops]string{dropTooLong: "too_long", dropFrameTooLong: "frame_too_long",
	dropNotAllowed: "not_allowed", dropTooManyConns: "too_many_conns", dropWriteFailed: "write_failed"}

// NewMetrics makes the syslog collectors and registers them with reg (if
// reg is nil, they are made and not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_syslog_dropped_total",
		Help: "Node log messages, or TCP connections, not kept in full, by reason.",
	}, []string{"reason"})
	m := &Metrics{
		lines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootd_syslog_lines_total",
			Help: "Messages written to node logs, one line each.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootd_syslog_bytes_total",
			Help: "Bytes written to node logs (escaped lines with their newlines).",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bootd_syslog_connections",
			Help: "Syslog TCP connections open.",
		}),
	}
	for d := range numDrops {
		m.dropped[d] = dropped.WithLabelValues(dropNames[d])
	}
	if reg != nil {
		reg.MustRegister(m.lines, m.bytes, dropped, m.conns)
	}
	return m
}

// wrote counts a line of n bytes written to a node's log.
func (m *Metrics) wrote(n int) {
	if m != nil {
		m.lines.Inc()
		m.bytes.Add(float64(n))
	}
}

func (m *Metrics) drop(d dropReason) {
	if m != nil {
		m.dropped[d].Inc()
	}
}

func (m *Metrics) connOpened() {
	if m != nil {
		m.conns.Inc()
	}
}

func (m *Metrics) connClosed() {
	if m != nil {
		m.conns.Dec()
	}
}

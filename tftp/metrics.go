package tftp

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
)

// Metrics counts TFTP transfers, their bytes and times, for Prometheus. A
// nil *Metrics counts nothing.
//
// Files are labelled by kind, from the few the boot tree holds, never by
// name: a label per requested name would let any client grow bootd's
// memory (and every scrape) without bound.
type Metrics struct {
	transfers [numKinds][numResults]prometheus.Counter
	bytes     [numKinds]prometheus.Counter
	duration  [numKinds]prometheus.Observer
	active    prometheus.Gauge
}

// kind is what a file is to a boot, from the stage resolve gives it.
type kind uint8

const (
	kindLoader kind = iota
	kindConfig
	kindKernel
	kindInitrd
	// kindOther: no file of the boot tree, or a request turned away
	// before its name was looked at.
	kindOther
	numKinds
)

var kindNames = [numKinds]string{kindLoader: "loader", kindConfig: "config", kindKernel: "kernel", kindInitrd: "initrd", kindOther: "other"}

func kindOf(s events.Stage) kind {
	switch s {
	case events.StageLoader:
		return kindLoader
	case events.StageConfig:
		return kindConfig
	case events.StageKernel:
		return kindKernel
	case events.StageInitrd:
		return kindInitrd
	}
	return kindOther
}

type result uint8

const (
	resultOK result = iota
	// resultFailed: the transfer began and broke off (no ACKs, a socket
	// error, bootd stopping), or could not begin for want of a socket.
	resultFailed
	// resultAborted: the client ended the transfer with an ERROR, which
	// PXE ROMs do on purpose after learning a file's size.
	resultAborted
	resultNotFound
	// resultRefused: turned away before any transfer: over the transfer
	// limits or the per-address rate, a write request, a malformed
	// request or a forbidden name.
	resultRefused
	numResults
)

var resultNames = [numResults]string{resultOK: "ok", resultFailed: "failed", resultAborted: "aborted",
	resultNotFound: "not_found", resultRefused: "refused"}

// NewMetrics makes the TFTP collectors and registers them with reg (if
// reg is nil, they are made and not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	transfers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_tftp_transfers_total",
		Help: "TFTP read requests, by kind of file and result (refused: turned away by limits, rate or policy before any transfer).",
	}, []string{"kind", "result"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_tftp_bytes_total",
		Help: "File data sent by TFTP, resent blocks included, by kind of file.",
	}, []string{"kind"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "bootd_tftp_transfer_duration_seconds",
		Help: "Time from the first block (or OACK) to the last ACK of completed TFTP transfers, by kind of file.",
		// A config takes milliseconds, an initrd over a slow or lossy
		// link up to a minute.
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"kind"})
	m := &Metrics{active: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "bootd_tftp_active_transfers",
		Help: "TFTP transfers in progress.",
	})}
	for k := range numKinds {
		for r := range numResults {
			m.transfers[k][r] = transfers.WithLabelValues(kindNames[k], resultNames[r])
		}
		m.bytes[k] = bytes.WithLabelValues(kindNames[k])
		m.duration[k] = duration.WithLabelValues(kindNames[k])
	}
	if reg != nil {
		reg.MustRegister(transfers, bytes, duration, m.active)
	}
	return m
}

// sent counts a transfer that was tried: err is what it ended with, n the
// bytes of data it sent, took how long it ran.
func (m *Metrics) sent(s events.Stage, err error, n int64, took time.Duration) {
	if m == nil {
		return
	}
	k := kindOf(s)
	var ec errClient
	switch {
	case err == nil:
		m.transfers[k][resultOK].Inc()
		m.duration[k].Observe(took.Seconds())
	case errors.As(err, &ec):
		m.transfers[k][resultAborted].Inc()
	default:
		m.transfers[k][resultFailed].Inc()
	}
	m.bytes[k].Add(float64(n))
}

// turnedAway counts a request that got no transfer, for a result other
// than ok: its kind is unknown (other).
func (m *Metrics) turnedAway(r result) {
	if m == nil {
		return
	}
	m.transfers[kindOther][r].Inc()
}

// started and finished track the transfers in progress.
func (m *Metrics) started() {
	if m != nil {
		m.active.Inc()
	}
}

func (m *Metrics) finished() {
	if m != nil {
		m.active.Dec()
	}
}

// refusal is the result of a request turned away with err.
func refusal(err error) result {
	if errors.Is(err, boot.ErrNotFound) {
		return resultNotFound
	}
	return resultRefused
}

package nfs

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts NFS, MOUNT and NFSACL calls, the data read and the
// connections, for Prometheus. A nil *Metrics counts nothing.
//
// Procedures are labelled from the fixed tables below, and whatever else
// a client sends as "other": a label per procedure number (or per client)
// would let any client grow bootd's memory (and every scrape) without
// bound.
type Metrics struct {
	ops       [numPrograms][]procMetrics // by program, then procedure number; the last is "other"
	readBytes prometheus.Counter
	conns     prometheus.Gauge
	refusals  [numRefusals]prometheus.Counter
	errs      [numFailures]prometheus.Counter
}

type procMetrics struct {
	ok, failed prometheus.Counter
	duration   prometheus.Observer
}

type program uint8

const (
	programNFS program = iota
	programMount
	programNFSACL
	numPrograms
)

var programNames = [numPrograms]string{programNFS: "nfs", programMount: "mount", programNFSACL: "nfsacl"}

// Procedure names, as RFC 1813 spells them (Linux's fs/nfs_common for
// NFSACL), indexed by procedure number.
var procNames = [numPrograms][]string{
	programNFS: {
		procNull: "NULL", procGetattr: "GETATTR", procSetattr: "SETATTR", procLookup: "LOOKUP",
		procAccess: "ACCESS", procReadlink: "READLINK", procRead: "READ", procWrite: "WRITE",
		procCreate: "CREATE", procMkdir: "MKDIR", procSymlink: "SYMLINK", procMknod: "MKNOD",
		procRemove: "REMOVE", procRmdir: "RMDIR", procRename: "RENAME", procLink: "LINK",
		procReaddir: "READDIR", procReaddirplus: "READDIRPLUS", procFsstat: "FSSTAT",
		procFsinfo: "FSINFO", procPathconf: "PATHCONF", procCommit: "COMMIT",
	},
	programMount: {
		mntNull: "NULL", mntMnt: "MNT", mntDump: "DUMP", mntUmnt: "UMNT", mntUmntall: "UMNTALL", mntExport: "EXPORT",
	},
	programNFSACL: {
		aclProcNull: "NULL", aclProcGetacl: "GETACL", aclProcSetacl: "SETACL",
	},
}

// Why connections are refused at accept.
type refusal uint8

const (
	refusedNotAllowed refusal = iota
	refusedInsecurePort
	refusedTooMany
	refusedTooManyPerClient
	numRefusals
)

var refusalNames = [numRefusals]string{refusedNotAllowed: "not_allowed", refusedInsecurePort: "insecure_port",
	refusedTooMany: "too_many", refusedTooManyPerClient: "too_many_per_client"}

// Errors that end a connection or a call outside any procedure.
type failure uint8

const (
	failAccept         failure = iota // accept failed (descriptors, memory)
	failRecordTooLarge                // a record over maxRecord
	failIdleTimeout                   // no call for idleTimeout
	failRecordTimeout                 // a record trickled in for over recordTimeout
	failRead                          // any other read error (a reset)
	failWriteTimeout                  // a reply not taken within writeTimeout
	failWrite                         // any other write error
	failDecode                        // not an RPC call
	failUnsupported                   // a program or version not served
	numFailures
)

var failureNames = [numFailures]string{failAccept: "accept", failRecordTooLarge: "record_too_large",
	failIdleTimeout: "idle_timeout", failRecordTimeout: "record_timeout", failRead: "read",
	failWriteTimeout: "write_timeout", failWrite: "write", failDecode: "decode", failUnsupported: "unsupported"}

// NewMetrics makes the NFS collectors and registers them with reg (if reg
// is nil, they are made and not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_nfs_operations_total",
		Help: "NFSv3, MOUNT and NFSACL calls answered, by program, procedure and status (error: an RPC or NFS failure status).",
	}, []string{"program", "procedure", "status"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "bootd_nfs_operation_duration_seconds",
		Help: "Time to answer an NFSv3, MOUNT or NFSACL call, from decoding to the reply built, by procedure.",
		// 50 µs (a GETATTR from memory) to 0.8 s (a 1 MiB READ from a
		// busy disk).
		Buckets: prometheus.ExponentialBuckets(0.00005, 4, 8),
	}, []string{"procedure"})
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_nfs_connections_refused_total",
		Help: "NFS connections closed at accept, by reason.",
	}, []string{"reason"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootd_nfs_errors_total",
		Help: "NFS connection and RPC errors outside any procedure, by kind.",
	}, []string{"kind"})
	m := &Metrics{
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootd_nfs_read_bytes_total",
			Help: "File data sent in NFS READ replies.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bootd_nfs_connections",
			Help: "NFS client connections open.",
		}),
	}
	for p := range numPrograms {
		names := append(procNames[p][:len(procNames[p]):len(procNames[p])], "other")
		m.ops[p] = make([]procMetrics, len(names))
		for i, name := range names {
			if name == "" {
				continue // no such procedure number: counted as other
			}
			m.ops[p][i] = procMetrics{
				ok:       ops.WithLabelValues(programNames[p], name, "ok"),
				failed:   ops.WithLabelValues(programNames[p], name, "error"),
				duration: duration.WithLabelValues(name),
			}
		}
	}
	for r := range numRefusals {
		m.refusals[r] = refusals.WithLabelValues(refusalNames[r])
	}
	for k := range numFailures {
		m.errs[k] = errs.WithLabelValues(failureNames[k])
	}
	if reg != nil {
		reg.MustRegister(ops, duration, refusals, errs, m.readBytes, m.conns)
	}
	return m
}

// call counts one record dispatch answered with reply (nil: none), begun
// at start. The program and procedure are read at their fixed offsets in
// the call header, as isRead does; the status from the reply: the accept
// status, then the procedure's own status word where it has one.
func (m *Metrics) call(rec, reply []byte, start time.Time) {
	if m == nil {
		return
	}
	if len(rec) < 24 || binary.BigEndian.Uint32(rec[4:]) != msgCall {
		m.errs[failDecode].Inc()
		return
	}
	var p program
	switch binary.BigEndian.Uint32(rec[12:]) {
	case progNFS:
		p = programNFS
	case progMount:
		p = programMount
	case progNFSACL:
		p = programNFSACL
	default:
		m.errs[failUnsupported].Inc()
		return
	}
	if binary.BigEndian.Uint32(rec[16:]) != 3 {
		m.errs[failUnsupported].Inc()
		return
	}
	proc := binary.BigEndian.Uint32(rec[20:])
	pm := &m.ops[p][len(m.ops[p])-1]
	if proc < uint32(len(m.ops[p])-1) && m.ops[p][proc].ok != nil {
		pm = &m.ops[p][proc]
	}
	pm.duration.Observe(time.Since(start).Seconds())
	if replyOK(p, proc, reply) {
		pm.ok.Inc()
	} else {
		pm.failed.Inc()
	}
}

// replyOK says whether a reply (still with its record mark's 4 bytes in
// front) reports success: accepted, SUCCESS, and a zero status word for
// the procedures whose result starts with one.
func replyOK(p program, proc uint32, reply []byte) bool {
	// mark, xid, REPLY, MSG_ACCEPTED, verifier flavor and length, accept status
	if len(reply) < 28 || binary.BigEndian.Uint32(reply[12:]) != msgAccepted ||
		binary.BigEndian.Uint32(reply[24:]) != acceptSuccess {
		return false
	}
	if proc == 0 || p == programMount && proc != mntMnt {
		return true // NULL, and MOUNT's void and list results
	}
	return len(reply) >= 32 && binary.BigEndian.Uint32(reply[28:]) == 0
}

// read counts the data bytes of a READ reply.
func (m *Metrics) read(n int) {
	if m != nil {
		m.readBytes.Add(float64(n))
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

// refused counts a connection closed at accept for why, one of refuse's
// or track's reasons.
func (m *Metrics) refused(why string) {
	if m == nil {
		return
	}
	var r refusal
	switch why {
	case whyInsecurePort:
		r = refusedInsecurePort
	case whyTooMany:
		r = refusedTooMany
	case whyTooManyPerClient:
		r = refusedTooManyPerClient
	default: // whyNotAllowed
		r = refusedNotAllowed
	}
	m.refusals[r].Inc()
}

func (m *Metrics) failed(k failure) {
	if m != nil {
		m.errs[k].Inc()
	}
}

// readFailed counts what ended a connection's reads, unless it was its
// client or bootd closing it.
func (m *Metrics) readFailed(err error, inRecord bool) {
	switch {
	case m == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, errRecordTooLarge):
		m.errs[failRecordTooLarge].Inc()
	case errors.Is(err, os.ErrDeadlineExceeded) && inRecord:
		m.errs[failRecordTimeout].Inc()
	case errors.Is(err, os.ErrDeadlineExceeded):
		m.errs[failIdleTimeout].Inc()
	default:
		m.errs[failRead].Inc()
	}
}

// writeFailed counts a reply that could not be written.
func (m *Metrics) writeFailed(err error) {
	switch {
	case m == nil:
	case errors.Is(err, os.ErrDeadlineExceeded):
		m.errs[failWriteTimeout].Inc()
	default:
		m.errs[failWrite].Inc()
	}
}

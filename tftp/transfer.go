package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A transfer sends one file to one client from its own socket (the
// server's transfer ID, RFC 1350), connected to the client's address so
// the kernel drops anything from another peer.
//
// Why not pin/tftp's sender: TFTP is a ping-pong, so a transfer's speed
// is the round trip, and on an idle master most of the round trip is the
// server thread waking up for each ACK. bootd therefore busy-polls its
// socket for a short while after each DATA before it sleeps (as Linux's
// SO_BUSY_POLL does for NIC queues), which pin/tftp, reading through Go's
// netpoller with a deadline per block, gives no way to do. Measured in
// bench/tftp.sh; the README has the figures.
type transfer struct {
	conn *net.UDPConn
	raw  syscall.RawConn
	s    *Server

	timeout  time.Duration
	deadline time.Time // the socket's read deadline, set lazily
	in       []byte
	// rtt is the last send-to-ACK time: a client slower than the spin
	// budget is not spun for.
	rtt time.Duration
	// waits counts ACK waits; every 64th spins whatever the last round
	// trip, so a transfer that once stalled can find out it need not sleep.
	waits int
	acked int // the last block acknowledged
	// heard is when the client last sent an ACK (or its request); gotAck
	// says it has sent one at all.
	heard  time.Time
	gotAck bool
	// sent counts the data bytes written, resends included, for metrics.
	sent int64
}

// A block is resent after resendAfter without its ACK (the client's
// timeout option overrides it): on a LAN a lost packet is best resent soon,
// where pin/tftp waited 5 s plus a random back-off. A transfer is given up
// after maxResends resends of one block.
//
// A request with no ACK yet is only a claim by an address that may be
// forged: the first block (or OACK) is sent at most firstTries times,
// each waiting at most firstWait whatever the timeout option says, so a
// 19-byte request costs bootd a few seconds and a few blocks, not a
// socket held for half an hour and nine blocks sent to a stranger. Once
// the client talks, a transfer it stops talking in for maxSilence ends,
// also whatever its timeout option (up to 255 s) says.
const (
	resendAfter = time.Second
	maxResends  = 8
	firstTries  = 3
)

// Variables so that tests need not wait the real times.
var (
	firstWait  = 3 * time.Second
	maxSilence = 30 * time.Second
)

var errGaveUp = errors.New("no answer from the client")

// errClient is an ERROR packet from the client, which ends a transfer.
type errClient struct{ code uint16 }

func (e errClient) Error() string { return fmt.Sprintf("the client sent error %d", e.code) }

func newTransfer(s *Server, local net.IP, peer *net.UDPAddr) (*transfer, error) {
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: local}, peer)
	if err != nil {
		return nil, fmt.Errorf("opening a transfer socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &transfer{conn: conn, raw: raw, s: s, timeout: resendAfter, in: make([]byte, 1500), heard: time.Now()}, nil
}

func (t *transfer) close() { t.conn.Close() }

func (t *transfer) sendError(code uint16, msg string) {
	t.conn.Write(appendError(nil, code, msg))
}

// send runs the transfer: the OACK when options were accepted, then the
// data in blocks of p.blksize, p.window blocks per ACK (RFC 7440; 1 is
// plain lockstep). Block numbers wrap from 65535 to 0, as tftpd-hpa,
// iPXE and curl expect of files over 65535 blocks.
func (t *transfer) send(src source, p params) error {
	if p.timeout > 0 {
		t.timeout = p.timeout
	}
	if len(p.oack) > 0 {
		oack := appendOACK(nil, p.oack)
		if err := t.exchange(func() error { _, err := t.conn.Write(oack); return err }, 0, 0); err != nil {
			return err
		}
	}
	// Block i (1-based) holds data[(i-1)*blksize:]; the last one is short,
	// empty when the size is a multiple of blksize.
	last := src.size()/p.blksize + 1
	pkt := make([]byte, 4+p.blksize)
	binary.BigEndian.PutUint16(pkt, opDATA)
	next := 1 // the first block not yet acknowledged
	for next <= last {
		end := min(next+p.window-1, last)
		src.mark(next)
		sendWindow := func() error {
			for i := next; i <= end; i++ {
				n := src.block(pkt[4:], i)
				binary.BigEndian.PutUint16(pkt[2:], uint16(i))
				if _, err := t.conn.Write(pkt[:4+n]); err != nil {
					return err
				}
				t.sent += int64(n)
			}
			return nil
		}
		if err := t.exchange(sendWindow, next-1, end); err != nil {
			return err
		}
		next = t.acked + 1
	}
	return nil
}

// exchange sends with send and waits for an ACK of a block in (from, to]
// (block numbers as ints; a window's ACK may be any block in it, after
// which the rest is resent, RFC 7440). It resends on timeout, up to the
// maxResends, and ignores duplicate ACKs of earlier blocks: answering
// those is what makes the "Sorcerer's Apprentice" storm of RFC 1123.
// For the OACK, from = to = 0 and ACK 0 is awaited.
func (t *transfer) exchange(send func() error, from, to int) error {
	tries, wait := 1+maxResends, t.timeout
	if !t.gotAck {
		tries, wait = firstTries, min(wait, firstWait)
	}
	for try := 0; ; try++ {
		if try >= tries || time.Since(t.heard) >= maxSilence {
			return errGaveUp
		}
		if err := send(); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		sent := time.Now()
		until := sent.Add(wait)
		if quiet := t.heard.Add(maxSilence); quiet.Before(until) {
			until = quiet
		}
		for {
			n, err := t.read(until, until.Sub(sent)/4)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // resend
				}
				return err
			}
			k, ok, err := acked(t.in[:n], from, to)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			t.acked = k
			t.heardAck(sent)
			return nil
		}
	}
}

// acked interprets a packet from the client while blocks (from, to] are
// unacknowledged (from = to = 0: the OACK): the block it acknowledges, as
// an int, if that is one of them; an error if the client ended the
// transfer. Anything else (a duplicate ACK, a stray packet) is ignored.
func acked(pkt []byte, from, to int) (int, bool, error) {
	block, ok, isErr := parseAck(pkt)
	if isErr {
		return 0, false, errClient{binary.BigEndian.Uint16(pkt[2:4])}
	}
	if !ok {
		return 0, false, nil
	}
	if to == 0 {
		return 0, block == 0, nil
	}
	// The block acknowledged, as an int: the one in [from, to] whose low
	// 16 bits match.
	k := from + int(block-uint16(from))
	if k <= from || k > to {
		return 0, false, nil
	}
	return k, true, nil
}

func (t *transfer) heardAck(sent time.Time) {
	t.heard = time.Now()
	t.rtt = t.heard.Sub(sent)
	t.gotAck = true
}

// read waits for a packet until until. The socket's deadline is moved
// only when it falls short, by slack more, so that most blocks cost no
// timer update; a lost packet is then resent at most slack late.
func (t *transfer) read(until time.Time, slack time.Duration) (int, error) {
	if t.deadline.Before(until) {
		t.deadline = until.Add(slack)
		if err := t.conn.SetReadDeadline(t.deadline); err != nil {
			return 0, err
		}
	}
	t.waits++
	spin := t.s.busyPoll > 0 && (t.rtt < t.s.busyPoll || t.waits%64 == 0) && t.s.active.Load() <= t.s.spinners && t.s.spare.ok.Load()
	var start time.Time
	if spin {
		start = time.Now()
	}
	var n int
	var rerr error
	err := t.raw.Read(func(fd uintptr) bool {
		for i := 1; ; i++ {
			n, rerr = unix.Read(int(fd), t.in)
			if rerr != unix.EAGAIN && rerr != unix.EINTR {
				return true
			}
			if !spin {
				return false // sleep in the netpoller until readable
			}
			if i%32 == 0 && time.Since(start) > t.s.busyPoll {
				spin = false
				return false
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, nil
}

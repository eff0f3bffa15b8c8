package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// TFTP error codes (RFC 1350, RFC 2347).
const (
	errCodeUndefined = 0
	errCodeNotFound  = 1
	errCodeAccess    = 2
	errCodeIllegalOp = 4
)

// Option limits. blksize follows RFC 2348 (8..65464); windowsize is
// RFC 7440's, capped where a window of large blocks would overrun a
// socket buffer at either end; timeout is RFC 2349's 1..255 s.
const (
	maxBlockSize  = 65464
	maxWindowSize = 64
)

// request is a decoded read or write request.
type request struct {
	op       uint16
	filename string
	mode     string // lower case: "octet" or "netascii"
	// options in the order the client sent them, names lower case; a
	// repeated option keeps its first value.
	options []option
}

type option struct{ name, value string }

var errMalformed = errors.New("malformed request")

// parseRequest decodes an RRQ or WRQ: opcode, then NUL-terminated
// filename, mode and option name/value pairs.
func parseRequest(b []byte) (request, error) {
	if len(b) < 2 {
		return request{}, errMalformed
	}
	r := request{op: binary.BigEndian.Uint16(b)}
	if r.op != opRRQ && r.op != opWRQ {
		return request{}, fmt.Errorf("opcode %d is not a request", r.op)
	}
	fields := bytes.Split(b[2:], []byte{0})
	// A well-formed request ends in NUL, which leaves one empty field last.
	if len(fields) < 3 || len(fields[len(fields)-1]) != 0 {
		return request{}, errMalformed
	}
	fields = fields[:len(fields)-1]
	r.filename = string(fields[0])
	r.mode = strings.ToLower(string(fields[1]))
	if r.mode != "octet" && r.mode != "netascii" {
		return request{}, fmt.Errorf("transfer mode %q is not supported", fields[1])
	}
	seen := map[string]bool{}
	// An unpaired trailing name is ignored, as tftpd-hpa does.
	for i := 2; i+1 < len(fields); i += 2 {
		name := strings.ToLower(string(fields[i]))
		if seen[name] {
			continue
		}
		seen[name] = true
		r.options = append(r.options, option{name, string(fields[i+1])})
	}
	return r, nil
}

// params are the negotiated transfer parameters.
type params struct {
	blksize int
	window  int
	timeout time.Duration // 0: the server's own
	oack    []option      // accepted options to acknowledge, in request order
}

// negotiate picks the options bootd accepts from a read request for a
// file of size bytes. Options it does not know, or values out of range,
// are left out of the OACK (RFC 2347), which makes the client use the
// default.
func negotiate(opts []option, size int) params {
	p := params{blksize: 512, window: 1}
	for _, o := range opts {
		n, err := strconv.Atoi(o.value)
		switch o.name {
		case "blksize":
			if err != nil || n < 8 {
				continue
			}
			p.blksize = min(n, maxBlockSize)
			p.oack = append(p.oack, option{o.name, strconv.Itoa(p.blksize)})
		case "tsize":
			// In a read request the client sends 0 and the server the size.
			p.oack = append(p.oack, option{o.name, strconv.Itoa(size)})
		case "timeout":
			if err != nil || n < 1 || n > 255 {
				continue
			}
			p.timeout = time.Duration(n) * time.Second
			p.oack = append(p.oack, option{o.name, o.value})
		case "windowsize":
			if err != nil || n < 1 || n > 65535 {
				continue
			}
			p.window = min(n, maxWindowSize)
			p.oack = append(p.oack, option{o.name, strconv.Itoa(p.window)})
		}
	}
	return p
}

func appendOACK(b []byte, opts []option) []byte {
	b = binary.BigEndian.AppendUint16(b, opOACK)
	for _, o := range opts {
		b = append(b, o.name...)
		b = append(b, 0)
		b = append(b, o.value...)
		b = append(b, 0)
	}
	return b
}

func appendError(b []byte, code uint16, msg string) []byte {
	b = binary.BigEndian.AppendUint16(b, opERROR)
	b = binary.BigEndian.AppendUint16(b, code)
	b = append(b, msg...)
	return append(b, 0)
}

// parseAck decodes an ACK; ok is false for any other packet. isError reports
// an ERROR packet, with which the client ends the transfer.
func parseAck(b []byte) (block uint16, ok, isError bool) {
	if len(b) < 4 {
		return 0, false, false
	}
	switch binary.BigEndian.Uint16(b) {
	case opACK:
		return binary.BigEndian.Uint16(b[2:]), true, false
	case opERROR:
		return 0, false, true
	}
	return 0, false, false
}

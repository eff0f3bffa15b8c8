package syslog

import (
	"bufio"
	"errors"
	"io"
)

// An octet count (RFC 6587 3.4.1) longer than the longest message kept is
// honoured by cutting the message and skipping the rest, like a long line;
// one beyond maxCount is not syslog, and the connection is closed.
const (
	maxCount       = 1 << 20
	maxCountDigits = 7
)

var errFrameTooLong = errors.New("octet count over 1 MiB")

// frameReader splits a TCP stream into messages, newline-framed or
// octet-counted, holding at most about 2*max bytes whatever the sender
// does: what is past max in a message is read and thrown away.
type frameReader struct {
	br  *bufio.Reader
	max int
	msg []byte
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, max+1), max: max, msg: make([]byte, max)}
}

// next returns the next message, valid until the next call, and whether it
// was cut to max bytes. On an error (io.EOF at the end) it returns with it
// whatever part of a message came before.
func (r *frameReader) next() (msg []byte, cut bool, err error) {
	n, counted, err := r.count()
	if err != nil {
		return nil, false, err
	}
	if !counted {
		return r.line()
	}
	if n > maxCount {
		return nil, false, errFrameTooLong
	}
	k, err := io.ReadFull(r.br, r.msg[:min(n, r.max)])
	if err != nil || n <= r.max {
		return r.msg[:k], false, err
	}
	_, err = r.br.Discard(n - k)
	return r.msg[:k], true, err
}

// count consumes an octet count and its space if the stream goes on with
// one: a digit 1-9, at most maxCountDigits digits, a space. Anything else
// is left to newline framing, which is what a legacy sender whose lines
// start with a date rather than a PRI needs.
func (r *frameReader) count() (n int, ok bool, err error) {
	b, err := r.br.Peek(1)
	if err != nil {
		return 0, false, err
	}
	if b[0] < '1' || b[0] > '9' {
		return 0, false, nil
	}
	// Peek one byte more at a time: a short frame ("5 hello") must not
	// wait for bytes the sender has no reason to send yet.
	for i := 2; i <= maxCountDigits+1; i++ {
		b, err := r.br.Peek(i)
		if err != nil {
			return 0, false, nil // line framing returns what there is
		}
		switch c := b[i-1]; {
		case c == ' ':
			for _, d := range b[:i-1] {
				n = 10*n + int(d-'0')
			}
			r.br.Discard(i)
			return n, true, nil
		case c < '0' || c > '9':
			return 0, false, nil
		}
	}
	return 0, false, nil
}

// line reads up to the next newline, keeping max bytes of it.
func (r *frameReader) line() ([]byte, bool, error) {
	line, err := r.br.ReadSlice('\n')
	if err == nil {
		line = line[:len(line)-1]
	}
	k := copy(r.msg, line)
	cut := len(line) > r.max
	for err == bufio.ErrBufferFull {
		_, err = r.br.ReadSlice('\n')
	}
	return r.msg[:k], cut, err
}

// escape appends msg to dst with its control characters written as #NNN
// (octal), as rsyslog does, so that one message is one line: a node must
// not be able to forge lines, or send escape sequences to whoever reads the
// log in a terminal.
func escape(dst, msg []byte) []byte {
	for _, b := range msg {
		if b < 0x20 || b == 0x7f {
			dst = append(dst, '#', '0'+b>>6, '0'+(b>>3)&7, '0'+b&7)
			continue
		}
		dst = append(dst, b)
	}
	return dst
}

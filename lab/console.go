package lab

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Type sends keystrokes to the node's serial console.
func (n *Node) Type(s string) error {
	c, err := net.DialTimeout("unix", n.Socket, 5*time.Second)
	if err != nil {
		return fmt.Errorf("node %s console: %w", n.Name, err)
	}
	defer c.Close()
	// A serial line at 115200 drops what it cannot take; type at a
	// human-ish pace.
	for _, line := range strings.SplitAfter(s, "\n") {
		if _, err := c.Write([]byte(line)); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// consoleFrom returns what the console printed after offset.
func (n *Node) consoleFrom(off int) string {
	b, _ := os.ReadFile(n.Console)
	if off > len(b) {
		return ""
	}
	return string(b[off:])
}

func (n *Node) consoleLen() int {
	st, err := os.Stat(n.Console)
	if err != nil {
		return 0
	}
	return int(st.Size())
}

// waitAfter waits until the console shows want after offset.
func (n *Node) waitAfter(off int, want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		out := n.consoleFrom(off)
		if strings.Contains(out, want) {
			return out, nil
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("node %s: %q not on the console after %v", n.Name, want, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Login logs in on the serial console.
func (n *Node) Login(user, password string, timeout time.Duration) error {
	off := n.consoleLen()
	n.Type("\n")
	if _, err := n.waitAfter(off, "login:", timeout); err != nil {
		return err
	}
	off = n.consoleLen()
	n.Type(user + "\n")
	if _, err := n.waitAfter(off, "assword:", 30*time.Second); err != nil {
		return err
	}
	off = n.consoleLen()
	n.Type(password + "\n")
	if _, err := n.waitAfter(off, "# ", 60*time.Second); err != nil {
		return fmt.Errorf("logging in: %w", err)
	}
	// Quiet the shell so that output is only what commands print.
	_, err := n.Run("stty -echo cols 500; export PS1='# ' TERM=dumb", 30*time.Second)
	return err
}

var seq atomic.Int64

// Run types a shell command on the (logged-in) console and returns what
// it printed, and its exit status in the error.
func (n *Node) Run(cmd string, timeout time.Duration) (string, error) {
	id := seq.Add(1) + 1000
	// The end marker is computed by the shell, so the echoed command line
	// never matches it.
	end := fmt.Sprintf("BOOTD-END-%d-", id)
	start := fmt.Sprintf("BOOTD-START-%d", id)
	off := n.consoleLen()
	if err := n.Type(fmt.Sprintf("echo BOOTD-START-$((%d)); %s; echo BOOTD-END-$((%d))-$?\n", id, cmd, id)); err != nil {
		return "", err
	}
	out, err := n.waitAfter(off, end, timeout)
	if err != nil {
		// Interrupt the command, or the line a character lost on the
		// serial line left open (a quote unclosed, the shell waiting at
		// "> "), so that the next command starts at a fresh prompt.
		n.Type("\x03\n")
		return out, err
	}
	i := strings.Index(out, start)
	j := strings.Index(out, end)
	body := out[i+len(start) : j]
	status := out[j+len(end):]
	if k := strings.IndexAny(status, "\r\n"); k >= 0 {
		status = status[:k]
	}
	body = strings.TrimSpace(string(bytes.ReplaceAll([]byte(body), []byte("\r"), nil)))
	if status != "0" {
		return body, fmt.Errorf("node %s: %q exited %s", n.Name, cmd, status)
	}
	return body, nil
}

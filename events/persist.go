package events

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// file is the on-disk form of the node records.
type file struct {
	Version int    `json:"version"`
	Nodes   []Node `json:"nodes"`
}

// Save writes the node records to path if anything changed since the last
// Save: to a temporary file first, synced, then renamed over path, so
// that a crash leaves the old records or the new ones, never half.
func (l *Log) Save(path string) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return nil
	}
	f := file{Version: 1}
	for _, n := range l.nodes {
		f.Nodes = append(f.Nodes, copyNode(n, true))
	}
	l.dirty = false
	l.mu.Unlock()
	b, err := json.Marshal(f)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		err = renameio.WriteFile(path, b, 0o644)
	}
	if err != nil {
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return fmt.Errorf("saving node records: %w", err)
	}
	return nil
}

// Load reads node records Save wrote. A missing file is no records; a
// damaged one is moved aside (path + ".bad") and reported, and the log
// starts empty: a bad file must not keep bootd from serving.
func (l *Log) Load(path string) error {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading node records: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		if err == nil {
			err = fmt.Errorf("version %d", f.Version)
		}
		os.Rename(path, path+".bad")
		return fmt.Errorf("node records %s unreadable (moved to %s.bad; starting empty): %w", path, path, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range f.Nodes {
		n := f.Nodes[i]
		mac := normMAC(n.MAC)
		if mac == "" || len(l.nodes) >= l.lim.Nodes {
			continue
		}
		n.MAC = mac
		if over := len(n.Boots) - l.lim.Boots; over > 0 {
			n.Boots = n.Boots[over:]
		}
		var lines []Line
		n.consoleBytes, n.syslogBytes = 0, 0
		for _, ln := range n.Console {
			lines, n.consoleBytes = l.push(lines, n.consoleBytes, Line{ln.Time, clean(ln.Text)})
		}
		n.Console, lines = lines, nil
		for _, ln := range n.Syslog {
			lines, n.syslogBytes = l.push(lines, n.syslogBytes, Line{ln.Time, clean(ln.Text)})
		}
		n.Syslog = lines
		l.nodes[mac] = &n
		if n.IP != "" {
			l.byIP[n.IP] = mac
		}
	}
	return nil
}

package syslog

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// logFile is a node's open log.
type logFile struct {
	f    *os.File
	size int64
	used uint64 // Server.tick at the last write, for closing the least recently used
}

// LogFile is where a node's messages go; the one before it is LogFile+".1".
func (s *Server) LogFile(ip netip.Addr) string { return filepath.Join(s.dir, ip.String()+".log") }

// append writes line to ip's log, rotating it first if the line would take
// it past MaxFileSize. s.fmu is held.
func (s *Server) append(ip netip.Addr, line []byte) error {
	lf, err := s.open(ip)
	if err != nil {
		return err
	}
	if lf.size > 0 && lf.size+int64(len(line)) > s.lim.MaxFileSize {
		if err := s.rotate(ip, lf); err != nil {
			return err
		}
		if lf, err = s.open(ip); err != nil {
			return err
		}
	}
	s.tick++
	lf.used = s.tick
	n, err := lf.f.Write(line)
	lf.size += int64(n)
	if err != nil {
		return fmt.Errorf("writing %s: %w", lf.f.Name(), err)
	}
	return nil
}

// open returns ip's log, opening it if need be and closing the least
// recently written one to stay within OpenFiles: a node per descriptor
// held forever would let a cluster (or forged UDP sources) exhaust bootd's
// descriptors, which NFS and TFTP need too.
func (s *Server) open(ip netip.Addr) (*logFile, error) {
	if lf := s.files[ip]; lf != nil {
		return lf, nil
	}
	for len(s.files) >= s.lim.OpenFiles {
		var lru netip.Addr
		var oldest *logFile
		for a, lf := range s.files {
			if oldest == nil || lf.used < oldest.used {
				lru, oldest = a, lf
			}
		}
		oldest.f.Close()
		delete(s.files, lru)
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the log directory: %w", err)
	}
	f, err := os.OpenFile(s.LogFile(ip), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening a node log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening a node log: %w", err)
	}
	lf := &logFile{f: f, size: st.Size()}
	s.files[ip] = lf
	return lf, nil
}

// rotate moves ip's log to LOG.1, replacing the one there, so that a node
// keeps at most twice MaxFileSize on the master's disk however much it
// sends.
func (s *Server) rotate(ip netip.Addr, lf *logFile) error {
	lf.f.Close()
	delete(s.files, ip)
	name := s.LogFile(ip)
	if err := os.Rename(name, name+".1"); err != nil {
		// Appending anyway would lift the cap; the message is lost instead.
		return fmt.Errorf("rotating a node log: %w", err)
	}
	return nil
}

func (s *Server) closeFiles() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for ip, lf := range s.files {
		lf.f.Close()
		delete(s.files, ip)
	}
}

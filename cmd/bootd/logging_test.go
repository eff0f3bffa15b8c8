package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestJournalHandlerText(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newLogHandler(&buf, "text", slog.LevelDebug, true)).With("service", "tftp")
	log.Error("bind failed", "err", "in use")
	log.Warn("slow client")
	log.Info("started")
	log.Debug("packet")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	want := []string{
		`<3>level=ERROR msg="bind failed" service=tftp err="in use"`,
		`<4>level=WARN msg="slow client" service=tftp`,
		`<6>level=INFO msg=started service=tftp`,
		`<7>level=DEBUG msg=packet service=tftp`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, lines[i], want[i])
		}
	}
}

func TestJournalHandlerJSONAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newLogHandler(&buf, "json", slog.LevelWarn, true))
	log.Info("not written")
	log.WithGroup("nfs").Error("mount", "client", "10.0.0.5")
	line := buf.String()
	if !strings.HasPrefix(line, "<3>{") || strings.Count(line, "\n") != 1 {
		t.Fatalf("want one JSON line with priority 3, got %q", line)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line[3:]), &rec); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if _, ok := rec["time"]; ok {
		t.Errorf("journal line carries its own time: %q", line)
	}
	if g, ok := rec["nfs"].(map[string]any); !ok || g["client"] != "10.0.0.5" || rec["msg"] != "mount" {
		t.Errorf("record %v: want msg mount, nfs.client 10.0.0.5", rec)
	}
}

func TestPlainHandlerKeepsTime(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		slog.New(newLogHandler(&buf, format, slog.LevelInfo, false)).Error("x")
		if s := buf.String(); strings.HasPrefix(s, "<") || !strings.Contains(s, "time") {
			t.Errorf("%s off the journal: %q, want a time and no priority", format, s)
		}
	}
}

func TestUnderJournal(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other, err := os.Create(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	env := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	if !underJournal(env, f) {
		t.Errorf("JOURNAL_STREAM=%s is the file's own device and inode, yet not taken for the journal", env)
	}
	// Inherited by a process whose stderr went elsewhere.
	if underJournal(env, other) {
		t.Errorf("JOURNAL_STREAM=%s taken for another file", env)
	}
	for _, bad := range []string{"", "garbage", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)} {
		if underJournal(bad, f) {
			t.Errorf("JOURNAL_STREAM=%q taken for the journal", bad)
		}
	}
}

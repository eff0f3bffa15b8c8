package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sleeper starts `sleep 60` in its own process group and records it, as
// Lab.Start does (before anything waits for it), then reaps it: exited is
// closed once it has gone. Its command name has spaces and parentheses,
// which reading the start time from /proc/PID/stat must get past.
func sleeper(t *testing.T) (p Proc, cmd *exec.Cmd, exited <-chan struct{}) {
	t.Helper()
	bin, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "lab) 1 2 (x")
	if err := os.Symlink(bin, odd); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(odd, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, idErr := identify("sleeper", cmd.Process.Pid, "")
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // by pidfd: this child and nothing else
		<-done
	})
	if idErr != nil {
		t.Fatal(idErr)
	}
	return p, cmd, done
}

// downFromFile writes the record to a lab.json, reads it back as `bootd
// lab down` does, takes that lab down, and returns what Down said.
func downFromFile(t *testing.T, p Proc) string {
	t.Helper()
	l := &Lab{Dir: t.TempDir(), Name: fmt.Sprintf("bdunit%d", os.Getpid()), Procs: []Proc{p}}
	if err := l.save(); err != nil {
		t.Fatal(err)
	}
	l, err := Load(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	l.Out = &out
	if err := l.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	return out.String()
}

func TestDownStopsItsProcesses(t *testing.T) {
	p, cmd, exited := sleeper(t)
	if p.StartTicks == 0 || p.BootID == "" {
		t.Fatalf("recorded %+v: no start time or boot ID", p)
	}
	said := downFromFile(t, p)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("Down left the lab's own process %d running; it said %q", p.PID, said)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the lab's process ended with %v, want killed by SIGTERM from Down", cmd.ProcessState)
	}
}

func TestDownSparesWhatItCannotVerify(t *testing.T) {
	for _, c := range []struct {
		name  string
		forge func(*Proc)
		say   string
	}{
		// The PID now belongs to a process started at another time.
		{"other start time", func(p *Proc) { p.StartTicks-- }, "another process"},
		// The record is from before a reboot.
		{"other boot", func(p *Proc) { p.BootID = "00000000-0000-0000-0000-000000000000" }, "reboot"},
		// A lab.json from a bootd that recorded PIDs only.
		{"older lab.json", func(p *Proc) { p.StartTicks, p.BootID = 0, "" }, "older bootd"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _, exited := sleeper(t)
			c.forge(&p)
			said := downFromFile(t, p)
			select {
			case <-exited:
				t.Fatalf("Down killed process %d, which its record does not match; it said %q", p.PID, said)
			case <-time.After(500 * time.Millisecond):
			}
			if err := syscall.Kill(p.PID, 0); err != nil {
				t.Fatalf("process %d: %v", p.PID, err)
			}
			if !strings.Contains(said, "not stopping sleeper") || !strings.Contains(said, c.say) {
				t.Errorf("Down said %q, want it to say it is not stopping sleeper, with %q", said, c.say)
			}
		})
	}
}

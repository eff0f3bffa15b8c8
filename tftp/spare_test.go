package tftp

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestCPUTimes(t *testing.T) {
	t0, i0, s0, err := cpuTimes()
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU in this process: its own ticks must grow, and never
	// past the host's.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	t1, i1, s1, err := cpuTimes()
	if err != nil {
		t.Fatal(err)
	}
	if t1 <= t0 || i1 < i0 || s1 <= s0 || s1-s0 > t1-t0 {
		t.Errorf("total %d->%d idle %d->%d self %d->%d", t0, t1, i0, i1, s0, s1)
	}
}

// CPU time bootd itself uses counts as spare: with this test burning CPU,
// polling is allowed after the first sample, however busy the machine is
// otherwise (as if it had 64 CPUs); it stops when the context ends.
func TestSpareCPUs(t *testing.T) {
	var s spareCPUs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.run(ctx, 64, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }() // as if 64 CPUs: surely one spare
	deadline := time.Now().Add(3 * time.Second)
	for !s.ok.Load() && time.Now().Before(deadline) {
	}
	if !s.ok.Load() {
		t.Error("no spare CPU found on a 64-CPU estimate")
	}
	cancel()
	<-done
	if s.ok.Load() {
		t.Error("polling still allowed after the sampler stopped")
	}
}

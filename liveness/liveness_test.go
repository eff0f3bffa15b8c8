package liveness

import (
	"net/netip"
	"testing"
	"time"
)

// TestSilentNodeIsLost: of two quiet nodes, the one that answers stays,
// the one that does not is lost after Misses rounds, and only then; a
// reply from the wrong address does not count.
func TestSilentNodeIsLost(t *testing.T) {
	alive := netip.MustParseAddr("10.0.0.11")
	dead := netip.MustParseAddr("10.0.0.12")
	var lost []string
	seen := map[string]int{}
	p := New(Config{Misses: 3,
		Quiet: func(time.Time) []Target {
			return []Target{{MAC: "52:54:00:00:00:11", IP: alive}, {MAC: "52:54:00:00:00:12", IP: dead}}
		},
		Alive: func(mac string, _ time.Time) { seen[mac]++ },
		Lost:  func(mac, why string) { lost = append(lost, mac) },
	})
	var sent int
	p.send = func(ip netip.Addr, seq uint16) {
		sent++
		switch ip {
		case alive:
			p.answered(ip, seq, time.Now())
		case dead:
			// A forged answer from someone else's address.
			p.answered(alive, seq, time.Now())
		}
	}
	now := time.Now()
	for round := 1; round <= 4; round++ {
		p.round(now)
		if round < 4 && len(lost) != 0 {
			t.Fatalf("lost after %d rounds: %v", round, lost)
		}
	}
	if len(lost) != 1 || lost[0] != "52:54:00:00:00:12" {
		t.Errorf("lost: %v", lost)
	}
	if seen["52:54:00:00:00:11"] != 4 || seen["52:54:00:00:00:12"] != 0 {
		t.Errorf("alive: %v", seen)
	}
	// Asked three times, then declared lost instead of a fourth echo.
	if sent != 4+3 {
		t.Errorf("echoes sent: %d", sent)
	}
}

// TestNodeHeardFromAgainIsForgiven: misses are forgotten once a node is
// no longer quiet.
func TestNodeHeardFromAgainIsForgiven(t *testing.T) {
	quiet := true
	var lost int
	p := New(Config{Misses: 2,
		Quiet: func(time.Time) []Target {
			if !quiet {
				return nil
			}
			return []Target{{MAC: "52:54:00:00:00:12", IP: netip.MustParseAddr("10.0.0.12")}}
		},
		Alive: func(string, time.Time) {},
		Lost:  func(string, string) { lost++ },
	})
	p.send = func(netip.Addr, uint16) {}
	p.round(time.Now())
	p.round(time.Now()) // one miss
	quiet = false       // the node logged something
	p.round(time.Now())
	quiet = true
	p.round(time.Now())
	p.round(time.Now())
	if lost != 0 {
		t.Errorf("lost after misses that were forgiven")
	}
}

package nodes

import (
	"net/netip"
	"testing"
)

var sample = []Node{
	{MAC: "52:54:00:12:34:56", Hostname: "node01", IP: "10.0.0.11"},
	{MAC: "52-54-00-12-34-57", Hostname: "node02", IP: "10.0.0.12", Image: "gpu"},
	{MAC: "52:54:00:12:34:58"},
}

func TestTable(t *testing.T) {
	tb, err := NewTable(sample)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := tb.Lookup(sample[0].HardwareAddr())
	if ok {
		t.Errorf("lookup by the unparsed entry should not work: %+v", n)
	}
	n, ok = tb.Lookup(tb.All()[1].HardwareAddr())
	if !ok || n.Hostname != "node02" || n.MAC != "52:54:00:12:34:57" {
		t.Errorf("lookup: %+v %v", n, ok)
	}
	if n, ok := tb.At(netip.MustParseAddr("10.0.0.12")); !ok || n.Hostname != "node02" {
		t.Errorf("At(10.0.0.12): %+v %v", n, ok)
	}
	if n, ok := tb.At(netip.MustParseAddr("10.0.0.13")); ok {
		t.Errorf("At(10.0.0.13), no node's address: %+v", n)
	}
	for _, bad := range [][]Node{
		{{MAC: "nope"}},
		{{MAC: "52:54:00:12:34:56"}, {MAC: "52:54:00:12:34:56"}},
		{{MAC: "52:54:00:12:34:56", Hostname: "bad_name"}},
		{{MAC: "52:54:00:12:34:56", IP: "10.0.0.300"}},
		{{MAC: "52:54:00:12:34:56", IP: "10.0.0.1"}, {MAC: "52:54:00:12:34:57", IP: "10.0.0.1"}},
	} {
		if _, err := NewTable(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

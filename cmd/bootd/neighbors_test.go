package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootd/bootd/nodes"
)

// TestNeighborNodes: a client whose complete ARP entry on the cluster
// interface has a node's Ethernet address is a node; an address with a
// stranger's, an incomplete entry, another interface's or none is not.
func TestNeighborNodes(t *testing.T) {
	table, err := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:bd:00:01"}, {MAC: "52:54:00:bd:00:02"}})
	if err != nil {
		t.Fatal(err)
	}
	arp := filepath.Join(t.TempDir(), "arp")
	os.WriteFile(arp, []byte(`IP address       HW type     Flags       HW address            Mask     Device
10.0.0.180       0x1         0x2         52:54:00:bd:00:01     *        m0
10.0.0.181       0x1         0x0         52:54:00:bd:00:02     *        m0
10.0.0.182       0x1         0x2         52:54:00:99:99:99     *        m0
10.0.0.183       0x1         0x2         52:54:00:bd:00:02     *        eth9
`), 0o644)
	n := newNeighborNodes("m0", table.Lookup)
	n.arp = arp
	for ip, want := range map[string]bool{"10.0.0.180": true, "10.0.0.181": false, "10.0.0.182": false, "10.0.0.183": false, "10.0.0.184": false} {
		if got := n.isNode(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: node %v, want %v", ip, got, want)
		}
	}
	// A stranger's answer is read again soon; a node's is kept.
	os.WriteFile(arp, []byte("IP address       HW type     Flags       HW address            Mask     Device\n"), 0o644)
	if !n.isNode(netip.MustParseAddr("10.0.0.180")) {
		t.Error("a node's answer was not kept")
	}
	// Until the table changes (a reload): then the ARP table is read again.
	n.forget()
	if n.isNode(netip.MustParseAddr("10.0.0.180")) {
		t.Error("a node's answer was kept after forget")
	}
}

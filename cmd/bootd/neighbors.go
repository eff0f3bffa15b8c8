package main

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bootd/bootd/nodes"
)

// neighborNodes tells whether a client on the cluster segment is a node
// of the table by its Ethernet address, which the kernel's ARP table
// holds for every address bootd talks to on the segment. It is how a
// master knows the nodes that booted from another one: after a failover
// (address: moved to this master) its records have none of them, and
// without it their root would be squashed to nobody, so that a root-only
// file of the image they read a moment ago is refused. Nodes behind a
// router (dhcp.relays) are not on the segment and not found here.
type neighborNodes struct {
	arp    string // /proc/net/arp
	iface  string // "" any
	lookup func(net.HardwareAddr) (nodes.Node, bool)

	mu   sync.Mutex
	seen map[netip.Addr]neighborAnswer
}

type neighborAnswer struct {
	node  bool
	until time.Time
}

// A node's answer is kept a while (an address moves to another machine
// only after its lease ends), a stranger's briefly: the ARP table is read
// at most this often per address.
const (
	neighborNodeTTL  = 5 * time.Minute
	neighborOtherTTL = 5 * time.Second
)

// newNeighborNodes answers from the ARP table of iface, and lookup for
// whether an Ethernet address is a node's (boot.Planner.Node, which
// follows config reloads).
func newNeighborNodes(iface string, lookup func(net.HardwareAddr) (nodes.Node, bool)) *neighborNodes {
	return &neighborNodes{arp: "/proc/net/arp", iface: iface, lookup: lookup, seen: map[netip.Addr]neighborAnswer{}}
}

// forget drops the answers kept: the node table changed.
func (n *neighborNodes) forget() {
	n.mu.Lock()
	clear(n.seen)
	n.mu.Unlock()
}

// isNode: a's Ethernet address on the segment is a node of the table.
func (n *neighborNodes) isNode(a netip.Addr) bool {
	now := time.Now()
	n.mu.Lock()
	ans, ok := n.seen[a]
	n.mu.Unlock()
	if ok && now.Before(ans.until) {
		return ans.node
	}
	mac, found := n.arpEntry(a)
	node := false
	if found {
		_, node = n.lookup(mac)
	}
	ttl := neighborOtherTTL
	if node {
		ttl = neighborNodeTTL
	}
	n.mu.Lock()
	if len(n.seen) > 4096 {
		clear(n.seen)
	}
	n.seen[a] = neighborAnswer{node: node, until: now.Add(ttl)}
	n.mu.Unlock()
	return node
}

// arpEntry finds a's complete entry in the ARP table ("IP address  HW type
// Flags  HW address  Mask  Device", flag 0x2 complete).
func (n *neighborNodes) arpEntry(a netip.Addr) (net.HardwareAddr, bool) {
	f, err := os.Open(n.arp)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan() // the header
	for s.Scan() {
		col := strings.Fields(s.Text())
		if len(col) < 6 || col[0] != a.String() || (n.iface != "" && col[5] != n.iface) {
			continue
		}
		if flags, err := strconv.ParseUint(strings.TrimPrefix(col[2], "0x"), 16, 32); err != nil || flags&0x2 == 0 {
			continue
		}
		if mac, err := net.ParseMAC(col[3]); err == nil {
			return mac, true
		}
	}
	return nil, false
}

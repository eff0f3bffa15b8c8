// Package nodes is the node table: which machines the cluster has, by MAC
// address, with the hostname, address and image each one boots. The DHCP
// and TFTP servers consult it through the boot plan; `bootd nodes export`
// writes it for the site's own DHCP server (ISC dhcpd, dnsmasq, Kea), and
// `bootd nodes import` reads a classic dhcpd.conf's host entries into it.
package nodes

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// Node is one machine of the cluster.
type Node struct {
	// MAC is the boot NIC's hardware address, e.g. 52:54:00:12:34:56.
	MAC string `yaml:"mac"`
	// Hostname is given to the node at boot (kernel command line and DHCP).
	Hostname string `yaml:"hostname"`
	// IP is the node's address: a fixed lease in full-DHCP mode, and what
	// `bootd nodes export` writes for the site's DHCP server.
	IP string `yaml:"ip"`
	// Image overrides defaults.image.
	Image string `yaml:"image"`
	// Append is added to the kernel command line after the defaults'.
	Append string `yaml:"append"`

	hw   net.HardwareAddr
	addr netip.Addr
}

// HardwareAddr returns the parsed MAC address.
func (n Node) HardwareAddr() net.HardwareAddr { return n.hw }

// Addr returns the parsed IP address (zero if none).
func (n Node) Addr() netip.Addr { return n.addr }

// Defaults apply to every node.
type Defaults struct {
	// Image is the image a node boots when its entry names none.
	Image string `yaml:"image"`
	// Append goes on every kernel command line.
	Append string `yaml:"append"`
	// Console is the serial console for the kernel and the boot loader,
	// e.g. "ttyS0,115200n8"; "" for none.
	Console string `yaml:"console"`
}

// Error says which entry and field of the table is wrong.
type Error struct {
	Index int
	Field string
	Msg   string
}

func (e *Error) Error() string { return fmt.Sprintf("nodes[%d].%s: %s", e.Index, e.Field, e.Msg) }

var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// Table is the validated node table.
type Table struct {
	nodes  []Node
	byMAC  map[string]int
	byAddr map[netip.Addr]int
}

// NewTable validates the entries and indexes them by MAC.
func NewTable(list []Node) (*Table, error) {
	t := &Table{byMAC: map[string]int{}, byAddr: map[netip.Addr]int{}}
	hosts := map[string]int{}
	for i, n := range list {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return nil, &Error{i, "mac", fmt.Sprintf("want an Ethernet address such as 52:54:00:12:34:56, got %q", n.MAC)}
		}
		n.hw = hw
		n.MAC = hw.String()
		if j, dup := t.byMAC[n.MAC]; dup {
			return nil, &Error{i, "mac", fmt.Sprintf("%s is listed twice (also nodes[%d])", n.MAC, j)}
		}
		if n.Hostname != "" {
			if !hostRE.MatchString(n.Hostname) {
				return nil, &Error{i, "hostname", fmt.Sprintf("want a host name of letters, digits and '-', got %q", n.Hostname)}
			}
			if j, dup := hosts[strings.ToLower(n.Hostname)]; dup {
				return nil, &Error{i, "hostname", fmt.Sprintf("%s is used twice (also nodes[%d])", n.Hostname, j)}
			}
			hosts[strings.ToLower(n.Hostname)] = i
		}
		if n.IP != "" {
			a, err := netip.ParseAddr(n.IP)
			if err != nil || !a.Is4() {
				return nil, &Error{i, "ip", fmt.Sprintf("want an IPv4 address, got %q", n.IP)}
			}
			if j, dup := t.byAddr[a]; dup {
				return nil, &Error{i, "ip", fmt.Sprintf("%s is used twice (also nodes[%d])", a, j)}
			}
			t.byAddr[a] = i
			n.addr = a
		}
		if strings.ContainsAny(n.Append, "\n\r") {
			return nil, &Error{i, "append", "must be one line"}
		}
		t.byMAC[n.MAC] = i
		t.nodes = append(t.nodes, n)
	}
	return t, nil
}

// Lookup returns the node with this MAC.
func (t *Table) Lookup(mac net.HardwareAddr) (Node, bool) {
	if t == nil {
		return Node{}, false
	}
	i, ok := t.byMAC[mac.String()]
	if !ok {
		return Node{}, false
	}
	return t.nodes[i], true
}

// At returns the node whose fixed address is a.
func (t *Table) At(a netip.Addr) (Node, bool) {
	if t == nil {
		return Node{}, false
	}
	i, ok := t.byAddr[a]
	if !ok {
		return Node{}, false
	}
	return t.nodes[i], true
}

// All returns the nodes in table order.
func (t *Table) All() []Node {
	if t == nil {
		return nil
	}
	return t.nodes
}

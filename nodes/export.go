package nodes

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// ExportOptions says what to add to each host entry besides the address.
type ExportOptions struct {
	// NextServer and Filename, when set, make the site's DHCP server hand
	// out the boot loader itself (no proxy-DHCP needed). NextServer is the
	// TFTP server's IPv4 address: PXE firmware reads it from the reply's
	// siaddr field, which holds an address, never a name.
	NextServer string
	Filename   string
}

// Formats lists the export formats.
var Formats = []string{"isc", "dnsmasq", "kea"}

// dnsmasqTag marks the table's hosts in dnsmasq output, so the boot file
// goes to them alone and not to every client of the site's dnsmasq (ISC
// and Kea carry it per host).
const dnsmasqTag = "bootd"

// Validate says what is wrong with the options, naming the flag.
func (o ExportOptions) Validate() error {
	if o.NextServer != "" {
		a, err := netip.ParseAddr(o.NextServer)
		if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return fmt.Errorf("next-server: want the TFTP server's IPv4 address, such as 10.0.0.1 "+
				"(PXE firmware reads it from the siaddr field, which holds an address, not a name), got %q", o.NextServer)
		}
	}
	if o.Filename != "" {
		// 127: the BOOTP file field is 128 bytes with its NUL. Quotes,
		// backslashes and commas would need escaping that the three
		// formats do differently, and no loader path needs them.
		if len(o.Filename) > 127 {
			return fmt.Errorf("filename: %d bytes is more than the 127 a DHCP reply's file field holds", len(o.Filename))
		}
		for _, r := range o.Filename {
			if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"\,'#;{}`, r) {
				return fmt.Errorf("filename: %q: want a path of printable ASCII without spaces, quotes, backslashes, commas, '#', ';' or braces", o.Filename)
			}
		}
	}
	return nil
}

// Export writes the table as host entries for the site's DHCP server:
// dhcpd.conf host blocks (isc), dnsmasq dhcp-host lines (dnsmasq), or the
// JSON list of a Kea subnet4 entry's "reservations" (kea). The output
// depends only on the table and the options, so writing it again gives the
// same bytes.
func (t *Table) Export(w io.Writer, format string, opt ExportOptions) error {
	if err := opt.Validate(); err != nil {
		return err
	}
	switch format {
	case "isc":
		return t.exportISC(w, opt)
	case "dnsmasq":
		return t.exportDnsmasq(w, opt)
	case "kea":
		return t.exportKea(w, opt)
	}
	return fmt.Errorf("unknown export format %q (want %s)", format, strings.Join(Formats, ", "))
}

// placeholderName is the host declaration name of a node without a
// hostname; ImportISC recognises it and leaves such a node nameless.
func placeholderName(mac string) string { return "node-" + strings.ReplaceAll(mac, ":", "") }

func hostID(n Node) string {
	if n.Hostname != "" {
		return n.Hostname
	}
	return placeholderName(n.MAC)
}

// exportISC writes dhcpd.conf host blocks.
func (t *Table) exportISC(w io.Writer, opt ExportOptions) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# bootd node table: %d hosts\n", len(t.All()))
	for _, n := range t.All() {
		fmt.Fprintf(&b, "host %s {\n  hardware ethernet %s;\n", hostID(n), n.MAC)
		if n.IP != "" {
			fmt.Fprintf(&b, "  fixed-address %s;\n", n.IP)
		}
		if n.Hostname != "" {
			fmt.Fprintf(&b, "  option host-name \"%s\";\n", n.Hostname)
		}
		if opt.NextServer != "" {
			fmt.Fprintf(&b, "  next-server %s;\n", opt.NextServer)
		}
		if opt.Filename != "" {
			fmt.Fprintf(&b, "  filename \"%s\";\n", opt.Filename)
		}
		b.WriteString("}\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// exportDnsmasq writes dhcp-host lines, and a dhcp-boot line for the
// table's hosts when asked for boot options.
func (t *Table) exportDnsmasq(w io.Writer, opt ExportOptions) error {
	boot := opt.NextServer != "" || opt.Filename != ""
	var b strings.Builder
	fmt.Fprintf(&b, "# bootd node table: %d hosts\n", len(t.All()))
	for _, n := range t.All() {
		parts := []string{n.MAC}
		if boot {
			parts = append(parts, "set:"+dnsmasqTag)
		}
		if n.IP != "" {
			parts = append(parts, n.IP)
		}
		if n.Hostname != "" {
			parts = append(parts, n.Hostname)
		}
		fmt.Fprintf(&b, "dhcp-host=%s\n", strings.Join(parts, ","))
	}
	// dhcp-boot=[tag:T,]FILE[,SERVERNAME[,SERVERADDR]]: dnsmasq sets siaddr
	// from SERVERADDR; an empty FILE sends the address with no file
	// (TestDnsmasqNextServerWithoutFile checks a real dnsmasq's reply).
	switch {
	case opt.NextServer != "":
		fmt.Fprintf(&b, "dhcp-boot=tag:%s,%s,,%s\n", dnsmasqTag, opt.Filename, opt.NextServer)
	case opt.Filename != "":
		fmt.Fprintf(&b, "dhcp-boot=tag:%s,%s\n", dnsmasqTag, opt.Filename)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// keaReservation is one entry of a Kea subnet4's "reservations".
type keaReservation struct {
	HWAddress  string `json:"hw-address"`
	IPAddress  string `json:"ip-address,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	NextServer string `json:"next-server,omitempty"`
	BootFile   string `json:"boot-file-name,omitempty"`
}

// exportKea writes the JSON list of Kea DHCPv4 reservations: the value of
// a subnet4 entry's "reservations", pasted or included there with
// `"reservations": <?include "FILE"?>`.
func (t *Table) exportKea(w io.Writer, opt ExportOptions) error {
	out := []keaReservation{}
	for _, n := range t.All() {
		r := keaReservation{n.MAC, n.IP, n.Hostname, opt.NextServer, opt.Filename}
		if r == (keaReservation{HWAddress: n.MAC}) {
			// Kea refuses a reservation that reserves nothing ("must
			// include at least one resource"), and a node with no
			// address, name or boot option needs none.
			continue
		}
		out = append(out, r)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding kea reservations: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

package nodes

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// ExportOptions says what to add to each host entry besides the address.
type ExportOptions struct {
	// NextServer and Filename, when set, make the site's DHCP server hand
	// out the boot loader itself (no proxy-DHCP needed).
	NextServer string
	Filename   string
}

// Formats lists the export formats.
var Formats = []string{"isc", "dnsmasq", "kea"}

// Export writes the table as host entries for the site's DHCP server.
func (t *Table) Export(w io.Writer, format string, opt ExportOptions) error {
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

func hostID(n Node) string {
	if n.Hostname != "" {
		return n.Hostname
	}
	return "node-" + strings.ReplaceAll(n.MAC, ":", "")
}

// exportISC writes dhcpd.conf host blocks.
func (t *Table) exportISC(w io.Writer, opt ExportOptions) error {
	fmt.Fprintf(w, "# bootd node table: %d hosts\n", len(t.All()))
	for _, n := range t.All() {
		fmt.Fprintf(w, "host %s {\n  hardware ethernet %s;\n", hostID(n), n.MAC)
		if n.IP != "" {
			fmt.Fprintf(w, "  fixed-address %s;\n", n.IP)
		}
		if n.Hostname != "" {
			fmt.Fprintf(w, "  option host-name %q;\n", n.Hostname)
		}
		if opt.NextServer != "" {
			fmt.Fprintf(w, "  next-server %s;\n", opt.NextServer)
		}
		if opt.Filename != "" {
			fmt.Fprintf(w, "  filename %q;\n", opt.Filename)
		}
		fmt.Fprintf(w, "}\n")
	}
	return nil
}

// exportDnsmasq writes dhcp-host lines (and dhcp-boot when asked).
func (t *Table) exportDnsmasq(w io.Writer, opt ExportOptions) error {
	fmt.Fprintf(w, "# bootd node table: %d hosts\n", len(t.All()))
	for _, n := range t.All() {
		parts := []string{n.MAC}
		if n.IP != "" {
			parts = append(parts, n.IP)
		}
		if n.Hostname != "" {
			parts = append(parts, n.Hostname)
		}
		fmt.Fprintf(w, "dhcp-host=%s\n", strings.Join(parts, ","))
	}
	if opt.Filename != "" {
		if opt.NextServer != "" {
			fmt.Fprintf(w, "dhcp-boot=%s,,%s\n", opt.Filename, opt.NextServer)
		} else {
			fmt.Fprintf(w, "dhcp-boot=%s\n", opt.Filename)
		}
	}
	return nil
}

// exportKea writes a JSON list of Kea DHCPv4 reservations, to paste into a
// subnet4 entry's "reservations".
func (t *Table) exportKea(w io.Writer, opt ExportOptions) error {
	type res struct {
		HWAddress  string `json:"hw-address"`
		IPAddress  string `json:"ip-address,omitempty"`
		Hostname   string `json:"hostname,omitempty"`
		NextServer string `json:"next-server,omitempty"`
		BootFile   string `json:"boot-file-name,omitempty"`
	}
	out := []res{}
	for _, n := range t.All() {
		out = append(out, res{n.MAC, n.IP, n.Hostname, opt.NextServer, opt.Filename})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"reservations": out})
}

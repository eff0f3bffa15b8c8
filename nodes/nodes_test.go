package nodes

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

func TestExportISCAcceptedByDhcpd(t *testing.T) {
	tb, _ := NewTable(sample)
	var b bytes.Buffer
	if err := tb.Export(&b, "isc", ExportOptions{NextServer: "10.0.0.1", Filename: "pxelinux.0"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"host node01 {", "hardware ethernet 52:54:00:12:34:56;", "fixed-address 10.0.0.11;", `option host-name "node01";`, "next-server 10.0.0.1;", `filename "pxelinux.0";`, "host node-525400123458 {"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("isc export lacks %q:\n%s", want, b.String())
		}
	}
	dhcpd, err := exec.LookPath("dhcpd")
	if err != nil {
		if testing.Short() {
			t.Skip("dhcpd not installed")
		}
		t.Fatal("dhcpd not installed (isc-dhcp-server): the README's test command installs it")
	}
	conf := filepath.Join(t.TempDir(), "dhcpd.conf")
	os.WriteFile(conf, []byte("subnet 10.0.0.0 netmask 255.255.255.0 {}\n"+b.String()), 0o644)
	if out, err := exec.Command(dhcpd, "-t", "-cf", conf).CombinedOutput(); err != nil {
		t.Fatalf("dhcpd -t rejects the export: %v\n%s", err, out)
	}
}

func TestExportDnsmasqAcceptedByDnsmasq(t *testing.T) {
	tb, _ := NewTable(sample)
	var b bytes.Buffer
	tb.Export(&b, "dnsmasq", ExportOptions{Filename: "pxelinux.0", NextServer: "10.0.0.1"})
	for _, want := range []string{"dhcp-host=52:54:00:12:34:56,10.0.0.11,node01", "dhcp-host=52:54:00:12:34:58\n", "dhcp-boot=pxelinux.0,,10.0.0.1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("dnsmasq export lacks %q:\n%s", want, b.String())
		}
	}
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		if testing.Short() {
			t.Skip("dnsmasq not installed")
		}
		t.Fatal("dnsmasq not installed: the README's test command installs it")
	}
	conf := filepath.Join(t.TempDir(), "dnsmasq.conf")
	os.WriteFile(conf, b.Bytes(), 0o644)
	if out, err := exec.Command(dnsmasq, "--test", "--conf-file="+conf).CombinedOutput(); err != nil {
		t.Fatalf("dnsmasq --test rejects the export: %v\n%s", err, out)
	}
}

func TestExportKea(t *testing.T) {
	tb, _ := NewTable(sample)
	var b bytes.Buffer
	tb.Export(&b, "kea", ExportOptions{})
	var out struct {
		Reservations []map[string]string `json:"reservations"`
	}
	if err := json.Unmarshal(b.Bytes(), &out); err != nil || len(out.Reservations) != 3 {
		t.Fatalf("kea export: %v\n%s", err, b.String())
	}
	if r := out.Reservations[0]; r["hw-address"] != "52:54:00:12:34:56" || r["ip-address"] != "10.0.0.11" || r["hostname"] != "node01" {
		t.Errorf("reservation %v", r)
	}
	if err := tb.Export(&b, "xml", ExportOptions{}); err == nil {
		t.Error("unknown format accepted")
	}
}

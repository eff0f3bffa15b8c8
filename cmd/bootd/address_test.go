package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/store"
)

// TestServiceAddress: with address: set (a VIP several masters share),
// everything the boot plan and DHCP send nodes to is that address: DHCP's
// siaddr and server identifier, and every wildcard listener (NFS, HTTP,
// console, syslog); a listener on a named address keeps it. Without it,
// the interface's address.
func TestServiceAddress(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 1)
	mac, _ := net.ParseMAC("52:54:00:bd:00:01")
	const base = "interface: lo\ndhcp: {mode: proxy}\ntftp: {listen: \"0.0.0.0:69\"}\n" +
		"nfs: {listen: \"0.0.0.0:2049\", allow: [10.0.0.0/8]}\nsyslog: {listen: \"0.0.0.0:514\", allow: [10.0.0.0/8]}\n" +
		"console: {listen: \"0.0.0.0:6666\"}\ndefaults: {image: demo}\n"
	for _, c := range []struct {
		name, yaml string
		want       string // where the wildcard services are reached
		http       string
	}{
		{"default", "http: {listen: \"0.0.0.0:8080\"}\n", "127.0.0.1", "127.0.0.1:8080"},
		{"vip", "address: 10.213.0.10\nhttp: {listen: \"0.0.0.0:8080\"}\n", "10.213.0.10", "10.213.0.10:8080"},
		{"vip, http on a named address", "address: 10.213.0.10\nhttp: {listen: \"10.213.0.1:8080\"}\n", "10.213.0.10", "10.213.0.1:8080"},
	} {
		cfg, err := config.Parse("bootd.yaml", []byte("state_dir: "+state+"\n"+base+c.yaml))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		p, serverIP, err := newPlanner(cfg, store.New(state))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if serverIP.String() != c.want {
			t.Errorf("%s: DHCP server address %s, want %s", c.name, serverIP, c.want)
		}
		s, err := p.Plan(mac)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for what, got := range map[string]netip.AddrPort{"nfs": s.Params.NFS, "syslog": s.Params.Log, "console": s.Params.Console} {
			if got.Addr().String() != c.want {
				t.Errorf("%s: %s reached at %s, want %s", c.name, what, got, c.want)
			}
		}
		if s.Params.Report.String() != c.http {
			t.Errorf("%s: reports to %s, want %s", c.name, s.Params.Report, c.http)
		}
		if url := p.FirstStage(boot.Client{MAC: mac, Firmware: boot.FirmwareBIOS, IPXE: true}); !strings.HasPrefix(url, "http://"+c.http+"/") {
			t.Errorf("%s: iPXE sent to %s, want http://%s/...", c.name, url, c.http)
		}
		if !strings.Contains(s.Cmdline(), "bootd.nfs="+c.want+":2049:") {
			t.Errorf("%s: command line %q", c.name, s.Cmdline())
		}
	}
}

// TestServiceAddressNeedsNoInterface: with DHCP off, address: alone says
// where TFTP's nodes reach bootd; no interface is looked up.
func TestServiceAddressNeedsNoInterface(t *testing.T) {
	state := t.TempDir()
	makeImage(t, state, 1)
	cfg, err := config.Parse("bootd.yaml", []byte("state_dir: "+state+"\naddress: 10.1.2.3\ndhcp: {mode: \"off\"}\nnfs: {allow: [10.0.0.0/8]}\ndefaults: {image: demo}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, ip, err := newPlanner(cfg, store.New(state))
	if err != nil || ip.String() != "10.1.2.3" {
		t.Fatalf("planner: %v, address %s", err, ip)
	}
	mac, _ := net.ParseMAC("52:54:00:bd:00:01")
	if s, err := p.Plan(mac); err != nil || s.Params.NFS.String() != "10.1.2.3:2049" {
		t.Errorf("plan: %v, nfs %s", err, s.Params.NFS)
	}
}

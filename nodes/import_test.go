package nodes

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// siteDhcpdConf is a classic cluster's dhcpd.conf: hosts at the top, in a
// group, in a subnet of a shared-network, with comments, strings that
// hold '#', ';' and braces, and statements the node table has no field
// for. INCLUDE is replaced by a file that exists, for dhcpd -t.
const siteDhcpdConf = `# dhcpd.conf of the cluster  { not a block
option domain-name "cluster.example";
option domain-name-servers 10.0.0.1, 10.0.0.2;
default-lease-time 600; max-lease-time 7200;
authoritative;
include "INCLUDE";

class "pxe" { match if substring (option vendor-class-identifier, 0, 9) = "PXEClient"; }

host login {                       # the login node
  hardware ethernet 52:54:00:00:00:01;
  fixed-address 10.0.0.5;
  option host-name "login.cluster.example";
}

group {
  filename "pxelinux.0";           # the old tftpd-hpa setup
  next-server 10.0.0.1;
  host node01 { hardware ethernet 52:54:00:00:01:01; fixed-address 10.0.0.11; }
  host node02 {
    hardware ethernet 52:54:0:0:1:2;   # dhcpd takes one-digit bytes
    fixed-address 10.0.0.12;
    filename "special;{#}.0";
  }
}

shared-network cluster {
  subnet 10.0.0.0 netmask 255.255.255.0 {
    option routers 10.0.0.1;
    pool { range 10.0.0.100 10.0.0.200; }
    host gpu01.cluster.example {
      hardware ethernet 52:54:00:00:02:01;
      fixed-address 10.0.0.21;
      option host-name "gpu01";
    }
    host nameless { fixed-address 10.0.0.99; }
  }
}

host tokenring { hardware token-ring 00:00:00:00:00:09; }
`

var siteDhcpdNodes = []Node{
	{MAC: "52:54:00:00:00:01", Hostname: "login", IP: "10.0.0.5"},
	{MAC: "52:54:00:00:01:01", Hostname: "node01", IP: "10.0.0.11"},
	{MAC: "52:54:00:00:01:02", Hostname: "node02", IP: "10.0.0.12"},
	{MAC: "52:54:00:00:02:01", Hostname: "gpu01", IP: "10.0.0.21"},
}

// TestImportISC: a dhcpd.conf that dhcpd -t accepts gives the hosts, with
// warnings for what the table cannot carry.
func TestImportISC(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "more.conf")
	write(t, inc, "# more hosts\n")
	conf := filepath.Join(dir, "dhcpd.conf")
	text := strings.ReplaceAll(siteDhcpdConf, "INCLUDE", inc)
	write(t, conf, text)
	accepts(t, "isc", conf)

	got, warnings, err := ImportISC(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, siteDhcpdNodes) {
		t.Errorf("imported\n%+v\nwant\n%+v", got, siteDhcpdNodes)
	}
	// One warning each, naming the line: the include, login's domain,
	// node02's filename, the host without hardware ethernet, the
	// token-ring host. The group's filename and next-server are the
	// group's, not a host's: no warning.
	wantLines := []string{"line 6: ", "line 10: ", "line 23: ", "line 36: ", "line 40: "}
	if len(warnings) != len(wantLines) {
		t.Fatalf("warnings:\n%s", strings.Join(warnings, "\n"))
	}
	for i, w := range warnings {
		if !strings.HasPrefix(w, wantLines[i]) {
			t.Errorf("warning %d: %q, want it on %q", i, w, wantLines[i])
		}
	}
	if _, err := NewTable(got); err != nil {
		t.Error(err)
	}
}

// TestImportISCRoundTrip: the export of the imported table gives back the
// host entries it was imported from, byte for byte.
func TestImportISCRoundTrip(t *testing.T) {
	tb, _ := NewTable(sample)
	for _, opt := range []ExportOptions{{}, {NextServer: "10.0.0.1", Filename: "pxelinux.0"}} {
		in := export(t, tb, "isc", opt)
		got, warnings, err := ImportISC(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		want := []Node{}
		for _, n := range tb.All() {
			want = append(want, Node{MAC: n.MAC, Hostname: n.Hostname, IP: n.IP})
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("imported %+v, want %+v", got, want)
		}
		if opt.NextServer == "" && len(warnings) != 0 {
			t.Errorf("warnings for bootd's own export: %q", warnings)
		}
		back, err := NewTable(got)
		if err != nil {
			t.Fatal(err)
		}
		if out := export(t, back, "isc", opt); out != in {
			t.Errorf("export of the imported table:\n%s\nwant:\n%s", out, in)
		}
	}
}

func TestImportISCErrors(t *testing.T) {
	for name, conf := range map[string]string{
		"dup-mac":      "host a { hardware ethernet 52:54:00:00:00:01; }\ngroup { host b { hardware ethernet 52:54:0:0:0:1; } }\n",
		"dup-name":     "host a { hardware ethernet 52:54:00:00:00:01; }\nhost x { hardware ethernet 52:54:00:00:00:02; option host-name \"A\"; }\n",
		"dup-ip":       "host a { hardware ethernet 52:54:00:00:00:01; fixed-address 10.0.0.1; }\nhost b { hardware ethernet 52:54:00:00:00:02; fixed-address 10.0.0.1; }\n",
		"unclosed":     "group {\n host a { hardware ethernet 52:54:00:00:00:01; }\n",
		"stray-brace":  "host a { hardware ethernet 52:54:00:00:00:01; }\n}\n",
		"no-semicolon": "host a { hardware ethernet 52:54:00:00:00:01 }\n",
		"open-string":  "host a { option host-name \"a; }\n",
		"deep":         strings.Repeat("group {\n", 100) + strings.Repeat("}\n", 100),
	} {
		if got, _, err := ImportISC(strings.NewReader(conf)); err == nil {
			t.Errorf("%s: accepted, got %+v", name, got)
		} else if strings.HasPrefix(name, "dup-") && !(strings.Contains(err.Error(), "host a (line 1)") && strings.Contains(err.Error(), "(line 2)")) {
			t.Errorf("%s: %v, want both hosts named", name, err)
		}
	}
}

func TestNodesYAML(t *testing.T) {
	out, err := NodesYAML(siteDhcpdNodes[:2])
	if err != nil {
		t.Fatal(err)
	}
	want := `nodes:
  - mac: 52:54:00:00:00:01
    hostname: login
    ip: 10.0.0.5
  - mac: 52:54:00:00:01:01
    hostname: node01
    ip: 10.0.0.11
`
	if string(out) != want {
		t.Errorf("YAML:\n%s\nwant:\n%s", out, want)
	}
}

// TestMergeYAML: imported hosts merge into a commented bootd.yaml: a MAC
// already listed is updated in place (its image and comments kept), the
// others appended, the rest of the file and its comments kept.
func TestMergeYAML(t *testing.T) {
	config := `# bootd.yaml of the site
interface: eth0   # the cluster network
defaults:
  image: trixie
nodes:                # the node table
  - mac: 52-54-00-00-01-01
    hostname: old01   # renamed by the import
    image: gpu        # kept
`
	out, err := MergeYAML([]byte(config), siteDhcpdNodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# bootd.yaml of the site", "interface: eth0 # the cluster network", "nodes: # the node table",
		"hostname: node01 # renamed by the import", "image: gpu # kept", "ip: 10.0.0.11", "- mac: 52:54:00:00:02:01"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("merged file lacks %q:\n%s", want, out)
		}
	}
	var back struct {
		Interface string
		Nodes     []Node
	}
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if back.Interface != "eth0" || len(back.Nodes) != 4 || back.Nodes[0].Image != "gpu" || back.Nodes[0].Hostname != "node01" || back.Nodes[3].Hostname != "gpu01" {
		t.Errorf("merged: %+v", back)
	}
	// Merging again changes nothing.
	again, err := MergeYAML(out, siteDhcpdNodes)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("a second merge: %v\n%s", err, again)
	}
	// An imported host that takes an address another entry has: refused.
	clash := "nodes:\n  - mac: 52:54:00:99:99:99\n    ip: 10.0.0.5\n"
	if _, err := MergeYAML([]byte(clash), siteDhcpdNodes); err == nil {
		t.Error("a merge giving two nodes one address was accepted")
	}
	// An empty file gets a nodes list.
	if out, err := MergeYAML(nil, siteDhcpdNodes[:1]); err != nil || !strings.Contains(string(out), "nodes:\n  - mac: 52:54:00:00:00:01") {
		t.Errorf("merge into an empty file: %v\n%s", err, out)
	}
}

// FuzzImportISC: the reader never panics, and whatever it accepts is a
// valid node table whose export it reads back to the same nodes with no
// warnings.
func FuzzImportISC(f *testing.F) {
	f.Add(siteDhcpdConf)
	tb, _ := NewTable(sample)
	var b bytes.Buffer
	tb.Export(&b, "isc", ExportOptions{NextServer: "10.0.0.1", Filename: "pxelinux.0"})
	f.Add(b.String())
	f.Add("host \"a\\\"b\" { hardware ethernet 0:1:2:3:4:5; option host-name \"x\\101\\x41\"; }")
	f.Fuzz(func(t *testing.T, conf string) {
		got, _, err := ImportISC(strings.NewReader(conf))
		if err != nil {
			return
		}
		tb, err := NewTable(got)
		if err != nil {
			t.Fatalf("accepted hosts that make no table: %v", err)
		}
		var b bytes.Buffer
		if err := tb.Export(&b, "isc", ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		back, warnings, err := ImportISC(&b)
		if err != nil || len(warnings) > 0 {
			t.Fatalf("re-reading the export: %v %q\n%s", err, warnings, b.String())
		}
		if len(back) != len(got) || (len(got) > 0 && !reflect.DeepEqual(back, got)) {
			t.Fatalf("round trip: %+v, want %+v", back, got)
		}
	})
}

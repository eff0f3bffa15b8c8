package config

import (
	"strings"
	"testing"
)

func TestWarningsNameIgnoredKeys(t *testing.T) {
	cases := []struct {
		yaml string
		want []string
	}{
		{"nfs: {allow: [10.0.0.0/24]}\ninterface: eth1\n", nil},
		// Full-mode keys in proxy mode.
		{"nfs: {allow: [10.0.0.0/24]}\ndhcp:\n  mode: proxy\n  subnet: 10.0.0.0/24\n  router: 10.0.0.1\n  range: [10.0.0.100, 10.0.0.199]\n  lease_time: 1h\n",
			[]string{`bootd.yaml:4: dhcp.subnet: ignored: only dhcp.mode: full uses it, and dhcp.mode is proxy`,
				`bootd.yaml:5: dhcp.router: ignored`, `bootd.yaml:7: dhcp.lease_time: ignored`, `bootd.yaml:6: dhcp.range: ignored`}},
		{"nfs: {allow: [10.0.0.0/24]}\ndhcp:\n  mode: \"off\"\n  relays: [10.1.0.1]\n  ipv6_ra: true\n  dns: [10.0.0.1]\n",
			[]string{`bootd.yaml:6: dhcp.dns: ignored: only dhcp.mode: full uses it, and dhcp.mode is off`,
				`bootd.yaml:4: dhcp.relays: ignored: dhcp.mode is off`, `bootd.yaml:5: dhcp.ipv6_ra: ignored`}},
		// Full mode uses them.
		{"nfs: {allow: [10.0.0.0/24]}\ndhcp:\n  mode: full\n  subnet: 10.0.0.0/24\n  router: 10.0.0.1\n", nil},
		// A service turned off, its other keys set.
		{"nfs:\n  listen: \"\"\n  secure_ports: false\n  max_connections: 10\nhttp: {allow: [10.0.0.0/8]}\n",
			[]string{`bootd.yaml:3: nfs.secure_ports: ignored: nfs.listen is "", which turns nfs off`, `bootd.yaml:4: nfs.max_connections: ignored`}},
		// nfs.allow is what http.allow defaults to: used with NFS off.
		{"nfs:\n  listen: \"\"\n  allow: [10.0.0.0/24]\n", nil},
		{"nfs:\n  listen: \"\"\n  allow: [10.0.0.0/24]\nhttp: {listen: \"\"}\n", []string{`bootd.yaml:3: nfs.allow: ignored`}},
		{"nfs: {listen: \"\"}\ntftp:\n  listen: \"\"\n  busy_poll: 1ms\n  requests_per_second: 5\n",
			[]string{`bootd.yaml:4: tftp.busy_poll: ignored: tftp.listen is ""`, `bootd.yaml:5: tftp.requests_per_second: ignored`}},
		// The defaults, written out, are no sign of intent.
		{"nfs: {listen: \"\"}\ntftp:\n  listen: \"\"\n  busy_poll: 200us\n  max_transfers: 1024\n", nil},
		{"nfs: {listen: \"\"}\nsyslog:\n  allow: [10.0.0.0/24]\n  max_file_mb: 8\n",
			[]string{`bootd.yaml:3: syslog.allow: ignored: syslog.listen is ""`, `bootd.yaml:4: syslog.max_file_mb: ignored`}},
		{"nfs: {listen: \"\"}\nhttp:\n  listen: \"\"\n  allow: [10.0.0.0/24]\n  boot: ipxe\n",
			[]string{`bootd.yaml:4: http.allow: ignored: http.listen is ""`, `bootd.yaml:5: http.boot: ignored`}},
		{"nfs: {listen: \"\"}\nunknown_nodes: ignore\ndefaults: {image: a}\nnodes:\n  - {mac: \"52:54:00:00:00:01\", image: b}\n",
			[]string{`bootd.yaml:3: defaults.image: boots no node`}},
		{"nfs: {listen: \"\"}\nunknown_nodes: ignore\ndefaults: {image: a}\nnodes:\n  - {mac: \"52:54:00:00:00:01\", image: b}\n  - {mac: \"52:54:00:00:00:02\"}\n", nil},
	}
	for _, c := range cases {
		cfg, err := Parse("bootd.yaml", []byte(c.yaml))
		if err != nil {
			t.Errorf("Parse(%q): %v", c.yaml, err)
			continue
		}
		got := cfg.Warnings()
		if len(got) != len(c.want) {
			t.Errorf("Parse(%q): warnings\n %q\nwant %d:\n %q", c.yaml, got, len(c.want), c.want)
			continue
		}
	next:
		for _, w := range c.want {
			for _, g := range got {
				if strings.HasPrefix(g, w) {
					continue next
				}
			}
			t.Errorf("Parse(%q): no warning %q in\n %q", c.yaml, w, got)
		}
	}
}

func TestCheckServe(t *testing.T) {
	cfg, err := Parse("bootd.yaml", []byte("state_dir: /srv/bootd\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.CheckServe()
	if got == nil {
		t.Fatal("a config without interface and nfs.allow is ready to serve")
	}
	lines := strings.Split(got.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "bootd.yaml: nfs.allow: list the client networks") || !strings.HasPrefix(lines[1], "bootd.yaml: interface: name the cluster NIC") {
		t.Errorf("CheckServe: %q", lines)
	}
	cfg, err = Parse("bootd.yaml", []byte("interface: eth1\nnfs:\n  allow: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckServe(); err == nil || err.Error() != `bootd.yaml:3: nfs.allow: list the client networks that may mount images, e.g. ["10.0.0.0/24"] (or nfs.listen: "" for no NFS)` {
		t.Errorf("CheckServe: %v", err)
	}
	for _, ok := range []string{
		"interface: eth1\nnfs: {allow: [10.0.0.0/24]}\n",
		"nfs: {listen: \"\"}\ndhcp: {mode: \"off\"}\ntftp: {listen: \"\"}\n",
		"nfs: {listen: \"\"}\ndhcp: {mode: \"off\"}\naddress: 10.0.0.10\n",
	} {
		cfg, err := Parse("bootd.yaml", []byte(ok))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.CheckServe(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

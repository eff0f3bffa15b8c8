package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	cfg, err := Parse("bootd.yaml", []byte(`
state_dir: /srv/bootd/
interface: eth1
nfs:
  listen: "0.0.0.0:2049"
  allow: ["10.0.0.0/24", "192.168.1.7", "10.1.2.3/16"]
  secure_ports: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/srv/bootd" || cfg.Interface != "eth1" || cfg.NFS.SecurePorts {
		t.Errorf("parsed %+v", cfg)
	}
	var got []string
	for _, p := range cfg.NFS.AllowPrefixes() {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "10.0.0.0/24 192.168.1.7/32 10.1.0.0/16" {
		t.Errorf("allow = %v", got)
	}
}

func TestAddress(t *testing.T) {
	cfg, err := Parse("bootd.yaml", []byte("nfs: {listen: \"\"}\naddress: 10.213.0.10\n"))
	if err != nil || cfg.ServiceAddr().String() != "10.213.0.10" {
		t.Errorf("address: %v %v", err, cfg.ServiceAddr())
	}
	cfg, err = Parse("bootd.yaml", []byte("nfs: {listen: \"\"}\n"))
	if err != nil || cfg.ServiceAddr().IsValid() {
		t.Errorf("no address: %v %v", err, cfg.ServiceAddr())
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("bootd.yaml", []byte("nfs:\n  allow: [10.0.0.0/8]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/var/lib/bootd" || cfg.NFS.Listen != "0.0.0.0:2049" || !cfg.NFS.SecurePorts {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = Parse("bootd.yaml", []byte("nfs:\n  listen: \"\"\n"))
	if err != nil || cfg.NFS.Listen != "" {
		t.Errorf("listen \"\" should disable NFS: %v %+v", err, cfg)
	}
	if cfg.TFTP.BusyPollDuration() != 200*time.Microsecond {
		t.Errorf("tftp.busy_poll default: %v", cfg.TFTP.BusyPollDuration())
	}
	cfg, err = Parse("bootd.yaml", []byte("nfs:\n  listen: \"\"\ntftp: {busy_poll: \"0\"}\n"))
	if err != nil || cfg.TFTP.BusyPollDuration() != 0 {
		t.Errorf("busy_poll \"0\": %v %v", err, cfg.TFTP.BusyPollDuration())
	}
}

func TestSyslogSection(t *testing.T) {
	cfg, err := Parse("bootd.yaml", []byte(`
nfs: {listen: ""}
syslog:
  listen: "10.0.0.1:514"
  allow: ["10.0.0.0/24", "192.168.1.7", "10.1.2.3/16"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.Syslog.AllowPrefixes() {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "10.0.0.0/24 192.168.1.7/32 10.1.0.0/16" {
		t.Errorf("syslog.allow = %v", got)
	}
	if cfg.Syslog.MaxFileSize() != 64<<20 {
		t.Errorf("syslog.max_file_mb default: %d bytes", cfg.Syslog.MaxFileSize())
	}
	cfg, err = Parse("bootd.yaml", []byte("nfs: {listen: \"\"}\nsyslog: {max_file_mb: 8}\n"))
	if err != nil || cfg.Syslog.Listen != "" || cfg.Syslog.MaxFileSize() != 8<<20 {
		t.Errorf("syslog off, max_file_mb 8: %v %+v", err, cfg.Syslog)
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"state_dir: /x\nnfs:\n  lisen: \":2049\"\n", `bootd.yaml:3: unknown key "lisen" in nfs (known keys: allow, listen, max_connections, max_connections_per_client, record, secure_ports, squash_unknown)`},
		{"statedir: /x\n", `bootd.yaml:1: unknown key "statedir" in the top level`},
		{"nfs:\n  allow: [10.0.0.0/24, 10.0.0/33]\n", `bootd.yaml:2: nfs.allow[1]: want a network in CIDR form`},
		{"nfs:\n  allow: 10.0.0.0/24\n", `bootd.yaml:2: nfs.allow: want a list`},
		{"nfs:\n  secure_ports: maybe\n  allow: [1.2.3.4]\n", `bootd.yaml:2: nfs.secure_ports: want true or false, got "maybe"`},
		{"state_dir: relative/dir\nnfs: {allow: [1.2.3.4]}\n", `bootd.yaml:1: state_dir: want an absolute directory path`},
		{"nfs:\n  listen: 2049\n  allow: [1.2.3.4]\n", `bootd.yaml:2: nfs.listen: want IP:PORT`},
		{"nfs: [1, 2]\n", `bootd.yaml:1: nfs: want a mapping of keys`},
		{"nfs:\n\tallow: x\n", `bootd.yaml:2:1: a tab: YAML indents with spaces only`},
		{"nfs: {listen: \"\"}\ndhcp: {mode: relay}\n", `bootd.yaml:2: dhcp.mode: want proxy, full or off, got "relay"`},
		{"nfs: {listen: \"\"}\nnodes:\n  - {mac: \"52:54:00:00:00:01\"}\n  - {mac: \"52:54:00:00:00:0g\"}\n", `bootd.yaml:4: nodes[1].mac: want an Ethernet address`},
		{"nfs: {listen: \"\"}\nnodes:\n  - mac: \"52:54:00:00:00:01\"\n    hostnme: x\n", `bootd.yaml:4: unknown key "hostnme" in nodes[0] (known keys: append, hostname, image, ip, mac)`},
		{"nfs: {listen: \"\"}\nunknown_nodes: maybe\n", `bootd.yaml:2: unknown_nodes: want boot or ignore`},
		{"nfs: {listen: \"\"}\ntftp:\n  loaders: {grub.efi: /x}\n", `bootd.yaml:3: tftp.loaders.grub.efi: unknown loader`},
		{"nfs: {listen: \"\"}\ntftp: {busy_poll: 1s}\n", `bootd.yaml:2: tftp.busy_poll: want a duration up to 10ms`},
		{"nfs: {listen: \"\"}\ndefaults: {image: Bad}\n", `bootd.yaml:2: defaults.image: image name "Bad"`},
		{"nfs: {listen: \"\"}\nsyslog: {listen: \"0.0.0.0:514\"}\n", `bootd.yaml:2: syslog.allow: list the node networks`},
		{"nfs: {listen: \"\"}\nsyslog:\n  listen: \"0.0.0.0:514\"\n  allow: []\n", `bootd.yaml:4: syslog.allow: list the node networks`},
		{"nfs: {listen: \"\"}\nsyslog:\n  listen: \"0.0.0.0:514\"\n  allow: [10.0.0.0/24, 10.0.0/33]\n", `bootd.yaml:4: syslog.allow[1]: want a network in CIDR form`},
		{"nfs: {listen: \"\"}\nsyslog:\n  allow: [10.0.0.0/24]\n  max_file_mb: 0\n", `bootd.yaml:4: syslog.max_file_mb: want a whole number of MiB`},
		// Hostile or mistaken input that used to pass.
		{"nfs: {listen: \"\"}\n---\nnfs: {listen: \"0.0.0.0:2049\"}\n", `bootd.yaml:2: a second YAML document`},
		{"nfs: {listen: \"\"}\ndefaults:\n  append: \"quiet\\nMENU HIDDEN\"\n", `bootd.yaml:3: defaults.append: must be one line`},
		{"nfs: {listen: \"\"}\ndefaults:\n  console: \"ttyS0\\rx\"\n", `bootd.yaml:3: defaults.console: must be one line`},
		{"nfs: {listen: \"\"}\ndhcp:\n  relays: [10.0.0.1, nope]\n", `bootd.yaml:3: dhcp.relays[1]: want the IPv4 address`},
		{"nfs: {listen: \"\"}\ntftp:\n  max_transfers: -1\n", `bootd.yaml:3: tftp.max_transfers: want a number`},
		{"nfs:\n  allow: [1.2.3.4]\n  max_connections_per_client: -3\n", `bootd.yaml:3: nfs.max_connections_per_client: want a number`},
		{"nfs: {listen: \"\"}\naddress: 10.0.0.300\n", `bootd.yaml:2: address: want the IPv4 address nodes reach this master at`},
		{"nfs: {listen: \"\"}\naddress: \"fd00::10\"\n", `bootd.yaml:2: address: want the IPv4 address`},
		{"nfs: {listen: \"\"}\naddress: 10.0.0.10/24\n", `bootd.yaml:2: address: want the IPv4 address`},
		{"nfs: {listen: \"\"}\naddress: 0.0.0.0\n", `bootd.yaml:2: address: want the IPv4 address`},
	}
	for _, c := range cases {
		_, err := Parse("bootd.yaml", []byte(c.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Parse(%q):\n got %v\nwant prefix %s", c.yaml, err, c.want)
		}
	}
}

func TestStatusSections(t *testing.T) {
	cfg, err := Parse("bootd.yaml", []byte("nfs: {allow: [10.0.0.0/24]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.HTTP.AllowPrefixes() {
		got = append(got, p.String())
	}
	if cfg.HTTP.Listen != "0.0.0.0:8080" || cfg.Console.Listen != "0.0.0.0:6666" || strings.Join(got, " ") != "10.0.0.0/24 127.0.0.0/8 ::1/128" {
		t.Errorf("defaults: http %q console %q allow %v", cfg.HTTP.Listen, cfg.Console.Listen, got)
	}
	if cfg.Status.LostAfterDuration() != 10*time.Minute || cfg.Status.ProbeEveryDuration() != 20*time.Second || cfg.Status.LogLines != 500 {
		t.Errorf("status defaults: %+v", cfg.Status)
	}
	cfg, err = Parse("bootd.yaml", []byte("nfs: {listen: \"\"}\nhttp: {listen: \"\", allow: [192.168.0.0/16]}\nconsole: {listen: \"\"}\nstatus: {probe_every: 0s, lost_after: 2m}\n"))
	if err != nil || cfg.HTTP.Listen != "" || len(cfg.HTTP.AllowPrefixes()) != 1 || cfg.Status.ProbeEveryDuration() != 0 || cfg.Status.LostAfterDuration() != 2*time.Minute {
		t.Errorf("explicit: %v %+v %+v", err, cfg.HTTP, cfg.Status)
	}
	for _, bad := range []string{
		"http: {listen: \"8080\"}", "http: {listen: \"0.0.0.0:0\"}", "console: {listen: \"x:6666\"}",
		"http: {allow: [nonsense]}", "status: {lost_after: 1s}", "status: {lost_after: soon}",
		"status: {probe_every: 10ms}", "status: {log_lines: 0}", "status: {log_kib: 1000000}", "status: {max_nodes: -1}",
	} {
		if _, err := Parse("bootd.yaml", []byte("nfs: {listen: \"\"}\n"+bad+"\n")); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

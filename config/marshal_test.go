package config

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// full sets every key, most away from their defaults.
const full = `state_dir: /srv/bootd
interface: eth1
address: 10.0.0.10
nfs:
  listen: "10.0.0.1:2049"
  allow: ["10.0.0.0/24", 192.168.1.7]
  secure_ports: false
  max_connections: 100
  max_connections_per_client: 4
  squash_unknown: false
  record: /tmp/nfs.jsonl
dhcp:
  mode: full
  ipv6_ra: true
  subnet: 10.0.0.0/24
  router: 10.0.0.254
  dns: [10.0.0.254, 10.0.0.253]
  domain: cluster.lan
  lease_time: 90m
  range: [10.0.0.100, 10.0.0.199]
  relays: [10.0.0.2]
tftp:
  listen: "10.0.0.1:69"
  loaders: {pxelinux.0: /opt/pxelinux.0}
  busy_poll: 50us
  max_transfers: 64
  max_transfers_per_client: 2
  requests_per_second: 7.5
initrd:
  extra_modules: [ahci, ext4]
  compression: gzip
syslog:
  listen: "0.0.0.0:514"
  allow: [10.0.0.0/24]
  max_file_mb: 8
http:
  listen: "0.0.0.0:8081"
  boot: ipxe
console:
  listen: "0.0.0.0:6667"
status:
  lost_after: 5m
  log_lines: 50
  log_kib: 16
  max_nodes: 100
  probe_every: 1m
image:
  root_password_hash: "!"
  authorized_keys: ["` + edKey + `"]
  syslog: "loghost:514"
  mounts:
    - {source: "files:/home", target: /home, type: nfs, options: "vers=3,hard"}
  nis: {domain: cluster, server: 10.0.0.1}
  include: [htop]
  mirror: https://mirror.example.org/debian
defaults:
  image: trixie
  append: quiet
  console: ""
unknown_nodes: ignore
nodes:
  - {mac: "52:54:00:00:00:01", hostname: node01, ip: 10.0.0.11, image: bookworm, append: "isolcpus=1"}
  - {mac: "52:54:00:00:00:02", hostname: node02}
`

// yaml.Marshal of a loaded config is what `bootd config check` prints: it
// must read back as the same effective config, and print the same again.
func TestMarshalRoundTrip(t *testing.T) {
	for name, src := range map[string]string{"default": "", "full": full} {
		first, err := Parse("bootd.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out, err := yaml.Marshal(first)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		second, err := Parse("bootd.yaml", out)
		if err != nil {
			t.Fatalf("%s: the printed config does not load: %v\n%s", name, err, out)
		}
		if a, b := effective(first), effective(second); !reflect.DeepEqual(a, b) {
			t.Errorf("%s: read back differs:\n%#v\n%#v\nprinted:\n%s", name, a, b, out)
		}
		again, _ := yaml.Marshal(second)
		if string(again) != string(out) {
			t.Errorf("%s: printed differently the second time:\n%s\n---\n%s", name, out, again)
		}
		// Every key is printed, defaults filled: nothing left to guess.
		var tree map[string]any
		if err := yaml.Unmarshal(out, &tree); err != nil {
			t.Fatal(err)
		}
		for _, key := range yamlKeys(reflect.TypeOf(Config{}), "") {
			if !holds(tree, key, false) {
				t.Errorf("%s: %s not printed", name, key)
			}
		}
	}
	cfg, _ := Parse("bootd.yaml", nil)
	out, _ := yaml.Marshal(cfg)
	var printed Config
	if err := yaml.Unmarshal(out, &printed); err != nil {
		t.Fatal(err)
	}
	// The defaults that used to stay implicit are written out.
	if printed.Status.LostAfter != "10m" || printed.TFTP.BusyPoll != "200us" || printed.NFS.MaxConnections != 1024 ||
		printed.TFTP.RequestsPerSecond != 20 || printed.Image.Mirror != "http://deb.debian.org/debian" ||
		!reflect.DeepEqual(printed.HTTP.Allow, []string{"127.0.0.0/8", "::1/128"}) || len(printed.TFTP.Loaders) != len(DefaultLoaders()) {
		t.Errorf("printed defaults:\n%s", out)
	}
	cfg, _ = Parse("bootd.yaml", []byte(full))
	out, _ = yaml.Marshal(cfg)
	printed = Config{}
	yaml.Unmarshal(out, &printed)
	if printed.DHCP.LeaseTime != "90m" || printed.Status.ProbeEvery != "1m" || printed.TFTP.Loaders["pxelinux.0"] != "/opt/pxelinux.0" ||
		printed.TFTP.Loaders["ldlinux.c32"] != DefaultLoaders()["ldlinux.c32"] || printed.NFS.Allow[1] != "192.168.1.7" {
		t.Errorf("printed full:\n%s", out)
	}
}

// yamlKeys lists the dotted key paths of a config type, "[]" standing for
// a list's entries; maps are leaves.
func yamlKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	switch t.Kind() {
	case reflect.Struct:
		for _, k := range knownKeys(t) {
			f, _ := fieldByTag(t, k)
			keys = append(keys, join(prefix, k))
			keys = append(keys, yamlKeys(f.Type, join(prefix, k))...)
		}
	case reflect.Slice:
		if e := t.Elem(); e.Kind() == reflect.Struct {
			keys = append(keys, yamlKeys(e, prefix+"[]")...)
		}
	}
	return keys
}

// holds reports whether tree holds key: in every entry of a list, or
// (any) in at least one; an empty list holds nothing to check.
func holds(tree map[string]any, key string, any bool) bool {
	var walk func(v interface{}, parts []string) bool
	walk = func(v interface{}, parts []string) bool {
		if len(parts) == 0 {
			return true
		}
		p, list := strings.CutSuffix(parts[0], "[]")
		m, ok := v.(map[string]interface{})
		if !ok {
			return v == nil && !any // an optional section printed as null (nis)
		}
		next, ok := m[p]
		if !ok {
			return false
		}
		if !list {
			return walk(next, parts[1:])
		}
		items, _ := next.([]interface{})
		for _, it := range items {
			if walk(it, parts[1:]) == any {
				return any
			}
		}
		return !any
	}
	return walk(tree, strings.Split(key, "."))
}

// effective is what bootd acts on: the values as printed, and what
// validation derived from them.
func effective(c *Config) []any {
	printed, err := yaml.Marshal(c)
	if err != nil {
		panic(err)
	}
	return []any{string(printed), c.Path, c.ServiceAddr(), c.Table().All(), c.NFS.AllowPrefixes(), c.HTTP.AllowPrefixes(),
		c.Syslog.AllowPrefixes(), c.DHCP.Full(), c.DHCP.RelayAddrs(), c.TFTP.BusyPollDuration(), c.HTTP.BootMode(),
		c.Status.LostAfterDuration(), c.Status.ProbeEveryDuration(), c.Syslog.MaxFileSize()}
}

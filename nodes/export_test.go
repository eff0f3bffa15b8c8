package nodes

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tool finds a DHCP server's binary. Outside -short a missing one fails
// the test, so CI cannot pass without the real check.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	if testing.Short() {
		t.Skipf("%s not installed", name)
	}
	t.Fatalf("%s not installed (Debian package %s): scripts/deps.sh installs it", name, pkg)
	return ""
}

// accepts runs a DHCP server's own configuration check on conf.
func accepts(t *testing.T, format, conf string) {
	t.Helper()
	var cmd *exec.Cmd
	switch format {
	case "isc":
		cmd = exec.Command(tool(t, "dhcpd", "isc-dhcp-server"), "-t", "-cf", conf)
	case "dnsmasq":
		cmd = exec.Command(tool(t, "dnsmasq", "dnsmasq-base"), "--test", "--conf-file="+conf)
	case "kea":
		cmd = exec.Command(tool(t, "kea-dhcp4", "kea-dhcp4-server"), "-t", conf)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		c, _ := os.ReadFile(conf)
		t.Fatalf("%s rejects %s: %v\n%s\n--- the file:\n%s", cmd.Args[0], conf, err, out, c)
	}
}

func export(t *testing.T, tb *Table, format string, opt ExportOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := tb.Export(&b, format, opt); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExportISCAcceptedByDhcpd(t *testing.T) {
	tb, _ := NewTable(sample)
	out := export(t, tb, "isc", ExportOptions{NextServer: "10.0.0.1", Filename: "pxelinux.0"})
	for _, want := range []string{"host node01 {", "hardware ethernet 52:54:00:12:34:56;", "fixed-address 10.0.0.11;", `option host-name "node01";`, "next-server 10.0.0.1;", `filename "pxelinux.0";`, "host node-525400123458 {"} {
		if !strings.Contains(out, want) {
			t.Errorf("isc export lacks %q:\n%s", want, out)
		}
	}
	conf := filepath.Join(t.TempDir(), "dhcpd.conf")
	write(t, conf, "subnet 10.0.0.0 netmask 255.255.255.0 {}\n"+out)
	accepts(t, "isc", conf)
}

func TestExportDnsmasqAcceptedByDnsmasq(t *testing.T) {
	tb, _ := NewTable(sample)
	out := export(t, tb, "dnsmasq", ExportOptions{Filename: "pxelinux.0", NextServer: "10.0.0.1"})
	for _, want := range []string{"dhcp-host=52:54:00:12:34:56,set:bootd,10.0.0.11,node01\n", "dhcp-host=52:54:00:12:34:58,set:bootd\n", "dhcp-boot=tag:bootd,pxelinux.0,,10.0.0.1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("dnsmasq export lacks %q:\n%s", want, out)
		}
	}
	// No boot options: no tag, no dhcp-boot.
	if plain := export(t, tb, "dnsmasq", ExportOptions{}); strings.Contains(plain, "set:") || strings.Contains(plain, "dhcp-boot") {
		t.Errorf("dnsmasq export without boot options:\n%s", plain)
	}
	conf := filepath.Join(t.TempDir(), "dnsmasq.conf")
	write(t, conf, out)
	accepts(t, "dnsmasq", conf)
}

// keaConf is a site's kea-dhcp4.conf that includes bootd's reservations.
func keaConf(include string) string {
	return `// the site's Kea
{
"Dhcp4": {
  "interfaces-config": { "interfaces": [ ] },
  "lease-database": { "type": "memfile", "persist": false },
  "valid-lifetime": 3600,
  # the cluster
  "subnet4": [ {
    "subnet": "10.0.0.0/24",
    "pools": [ { "pool": "10.0.0.100 - 10.0.0.200" } ],
    "option-data": [ { "name": "routers", "data": "10.0.0.1" } ],
    "reservations": <?include "` + include + `"?>
  } ]
}
}
`
}

func TestExportKeaAcceptedByKea(t *testing.T) {
	tb, _ := NewTable(sample)
	for _, opt := range []ExportOptions{{}, {NextServer: "10.0.0.1", Filename: "ipxe.efi"}} {
		out := export(t, tb, "kea", opt)
		var res []map[string]string
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("kea export is not a JSON list: %v\n%s", err, out)
		}
		// The third node has no name, address or boot option, which Kea
		// refuses as a reservation of nothing.
		want := 2
		if opt.NextServer != "" {
			want = 3
		}
		if len(res) != want {
			t.Fatalf("kea export with %+v: %d reservations, want %d:\n%s", opt, len(res), want, out)
		}
		if r := res[0]; r["hw-address"] != "52:54:00:12:34:56" || r["ip-address"] != "10.0.0.11" || r["hostname"] != "node01" || r["next-server"] != opt.NextServer || r["boot-file-name"] != opt.Filename {
			t.Errorf("reservation %v", r)
		}
		dir := t.TempDir()
		inc := filepath.Join(dir, "bootd-nodes.json")
		if _, err := tb.ExportFile(inc, "kea", opt); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "kea-dhcp4.conf")
		write(t, conf, keaConf(inc))
		accepts(t, "kea", conf)
	}
	var b bytes.Buffer
	if err := tb.Export(&b, "xml", ExportOptions{}); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestExportOptionsValidate(t *testing.T) {
	tb, _ := NewTable(sample)
	for _, bad := range []ExportOptions{
		{NextServer: "tftp.example.org"},
		{NextServer: "10.0.0"},
		{NextServer: "10.0.0.256"},
		{NextServer: "fd00::1"},
		{NextServer: "0.0.0.0"},
		{NextServer: "255.255.255.255"},
		{NextServer: " 10.0.0.1"},
		{Filename: "pxe linux.0"},
		{Filename: `a"b`},
		{Filename: "a,b"},
		{Filename: "a\nb"},
		{Filename: strings.Repeat("x", 128)},
	} {
		for _, f := range Formats {
			var b bytes.Buffer
			if err := tb.Export(&b, f, bad); err == nil {
				t.Errorf("%s export accepted %+v:\n%s", f, bad, b.String())
			} else if b.Len() != 0 {
				t.Errorf("%s export wrote output before failing on %+v", f, bad)
			}
		}
	}
	for _, good := range []ExportOptions{{NextServer: "10.0.0.1"}, {Filename: "bios/pxelinux.0"}, {Filename: strings.Repeat("x", 127)}} {
		if err := good.Validate(); err != nil {
			t.Errorf("refused %+v: %v", good, err)
		}
	}
}

// siteISC is a realistic dhcpd.conf the export's block goes into.
const siteISC = `# dhcpd.conf of the site
option domain-name "cluster.example";
option domain-name-servers 10.0.0.1;
default-lease-time 600;
max-lease-time 7200;
authoritative;

subnet 10.0.0.0 netmask 255.255.255.0 {
  range 10.0.0.100 10.0.0.200;
  option routers 10.0.0.1;
}

host printer {
  hardware ethernet 00:11:22:33:44:55;
  fixed-address 10.0.0.50;
}
`

const siteDnsmasq = `# dnsmasq.conf of the site
port=0
interface=eth0
dhcp-range=10.0.0.100,10.0.0.200,12h
dhcp-option=option:router,10.0.0.1
dhcp-host=00:11:22:33:44:55,10.0.0.50,printer
`

// TestBlockRerunnable: the block in a realistic dhcpd.conf or dnsmasq.conf
// is appended once, then replaced in place; running it twice gives the
// same file, the site's lines survive, and the server still accepts it.
func TestBlockRerunnable(t *testing.T) {
	tb, _ := NewTable(sample)
	tb2, _ := NewTable(sample[:1])
	for format, site := range map[string]string{"isc": siteISC, "dnsmasq": siteDnsmasq} {
		t.Run(format, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), format+".conf")
			write(t, conf, site)
			opt := ExportOptions{NextServer: "10.0.0.1", Filename: "pxelinux.0"}
			if changed, err := tb.ExportBlock(conf, format, opt); err != nil || !changed {
				t.Fatalf("first block: changed %v, %v", changed, err)
			}
			first, _ := os.ReadFile(conf)
			if changed, err := tb.ExportBlock(conf, format, opt); err != nil || changed {
				t.Fatalf("second block: changed %v, %v", changed, err)
			}
			second, _ := os.ReadFile(conf)
			if !bytes.Equal(first, second) {
				t.Fatalf("running twice changed the file:\n%s\n---\n%s", first, second)
			}
			want := site + BlockBegin + "\n" + export(t, tb, format, opt) + BlockEnd + "\n"
			if string(first) != want {
				t.Errorf("file after the block:\n%s\nwant:\n%s", first, want)
			}
			accepts(t, format, conf)

			// The admin adds lines after the block; a smaller table
			// replaces the block in place and keeps them.
			tail := "# added by the admin after the block\n"
			write(t, conf, string(first)+tail)
			if _, err := tb2.ExportBlock(conf, format, opt); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(conf)
			want = site + BlockBegin + "\n" + export(t, tb2, format, opt) + BlockEnd + "\n" + tail
			if string(got) != want {
				t.Errorf("file after replacing the block:\n%s\nwant:\n%s", got, want)
			}
			accepts(t, format, conf)
		})
	}
	if _, err := tb.ExportBlock(filepath.Join(t.TempDir(), "kea.conf"), "kea", ExportOptions{}); err == nil || !strings.Contains(err.Error(), "<?include") {
		t.Errorf("a kea block: %v, want an error that says to include a file", err)
	}
}

// TestIncludeFileRerunnable: the include-file form, written twice, as
// dhcpd, dnsmasq and Kea read it from the site's configuration.
func TestIncludeFileRerunnable(t *testing.T) {
	tb, _ := NewTable(sample)
	for _, format := range Formats {
		dir := t.TempDir()
		inc := filepath.Join(dir, "bootd-nodes.conf")
		conf := filepath.Join(dir, "site.conf")
		switch format {
		case "isc":
			write(t, conf, siteISC+`include "`+inc+`";`+"\n")
		case "dnsmasq":
			write(t, conf, siteDnsmasq+"conf-file="+inc+"\n")
		case "kea":
			write(t, conf, keaConf(inc))
		}
		for i, wantChanged := range []bool{true, false} {
			changed, err := tb.ExportFile(inc, format, ExportOptions{NextServer: "10.0.0.1"})
			if err != nil || changed != wantChanged {
				t.Fatalf("%s run %d: changed %v (want %v), %v", format, i+1, changed, wantChanged, err)
			}
		}
		if got, _ := os.ReadFile(inc); string(got) != export(t, tb, format, ExportOptions{NextServer: "10.0.0.1"}) {
			t.Errorf("%s include file:\n%s", format, got)
		}
		accepts(t, format, conf)
	}
}

func TestReplaceBlockRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"begin-only":   "a\n" + BlockBegin + "\nb\n",
		"end-only":     "a\n" + BlockEnd + "\n",
		"end-first":    BlockEnd + "\n" + BlockBegin + "\n",
		"two-begins":   BlockBegin + "\n" + BlockEnd + "\n" + BlockBegin + "\n" + BlockEnd + "\n",
		"two-ends":     BlockBegin + "\n" + BlockEnd + "\n" + BlockEnd + "\n",
		"nested-begin": BlockBegin + "\n" + BlockBegin + "\n" + BlockEnd + "\n",
	} {
		p := filepath.Join(dir, name)
		write(t, p, data)
		if _, err := ReplaceBlock(p, []byte("x\n")); err == nil || !strings.Contains(err.Error(), p+":") {
			t.Errorf("%s: %v, want an error naming the file and line", name, err)
		}
		if got, _ := os.ReadFile(p); string(got) != data {
			t.Errorf("%s: the refused file changed:\n%s", name, got)
		}
	}
	if _, err := ReplaceBlock(filepath.Join(dir, "absent"), []byte("x\n")); err == nil {
		t.Error("a missing file got a block")
	}
	// An edited BEGIN line is still the block's.
	p := filepath.Join(dir, "edited")
	write(t, p, "a\n# BEGIN bootd nodes (edited)\nold\n"+BlockEnd+"\nb")
	if _, err := ReplaceBlock(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "a\n"+BlockBegin+"\nnew\n"+BlockEnd+"\nb" {
		t.Errorf("edited markers:\n%s", got)
	}
	// No newline at the end of the file: the block starts on a line of its own.
	write(t, p, "a")
	ReplaceBlock(p, []byte("x\n"))
	if got, _ := os.ReadFile(p); string(got) != "a\n"+BlockBegin+"\nx\n"+BlockEnd+"\n" {
		t.Errorf("appended to an unterminated line:\n%s", got)
	}
}

// TestWriteFileKeepsModeOwnerLink: the site's file keeps its mode and
// owner, and a symbolic link to it stays a link.
func TestWriteFileKeepsModeOwnerLink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.conf")
	write(t, real, "old\n")
	if err := os.Chmod(real, 0o640); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if uid == 0 {
		uid, gid = 4321, 4322
		if err := os.Chown(real, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link.conf")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if changed, err := WriteFile(link, []byte("new\n")); err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi.Mode(), err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(real)
	if string(got) != "new\n" || fi.Mode().Perm() != 0o640 {
		t.Errorf("target: %q mode %v", got, fi.Mode())
	}
	if u, g := owner(fi); u != uid || g != gid {
		t.Errorf("owner %d:%d, want %d:%d", u, g, uid, gid)
	}
	fresh := filepath.Join(dir, "fresh.conf")
	if _, err := WriteFile(fresh, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o644 {
		t.Errorf("a new file's mode: %v", fi.Mode())
	}
}

func owner(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

package image

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/store"
)

// snapshot is every file and link under dir, with its content or target
// and mode, to prove a directory was not touched.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		out[strings.TrimPrefix(p, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s changed: %q, was %q", what, k, after[k], v)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s appeared: %q", what, k, v)
		}
	}
}

// fakeMaster is a directory standing for the master's own /etc and
// /root: what a symlink in an image could point at.
func fakeMaster(t *testing.T) string {
	m := t.TempDir()
	files := map[string]string{
		"shadow":                         "root:MASTER-HASH:19000:0:99999:7:::\n",
		"nsswitch.conf":                  "passwd: files\ngroup: files\nshadow: files\n",
		"hosts":                          "10.9.9.9 master\n",
		"ssh/ssh_host_ed25519_key":       "MASTER PRIVATE KEY\n",
		"ssh/sshd_config.d/site.conf":    "PermitRootLogin no\n",
		"dotssh/authorized_keys":         "ssh-ed25519 MASTER admin@master\n",
		"systemd/system/keep.service":    "[Service]\n",
		"network/interfaces":             "auto eth0\niface eth0 inet dhcp\n",
		"systemd/journald.conf.d/x.conf": "[Journal]\n",
	}
	for name, content := range files {
		os.MkdirAll(filepath.Join(m, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(m, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// escapingRoot is fakeRoot with files and directories replaced by
// symlinks to the master: absolute ones, and a relative one that climbs
// further up than the root.
func escapingRoot(t *testing.T, master string) string {
	root := fakeRoot(t)
	links := map[string]string{
		"etc/shadow":        filepath.Join(master, "shadow"),
		"etc/ssh":           filepath.Join(master, "ssh"),
		"root/.ssh":         filepath.Join(master, "dotssh"),
		"etc/systemd":       filepath.Join(master, "systemd"),
		"etc/network":       filepath.Join(master, "network"),
		"etc/hosts":         filepath.Join(master, "hosts"),
		"etc/resolv.conf":   filepath.Join(master, "hosts"),
		"etc/.updated":      filepath.Join(master, "hosts"),
		"etc/nsswitch.conf": strings.Repeat("../", 30) + strings.TrimPrefix(filepath.Join(master, "nsswitch.conf"), "/"),
	}
	for name, target := range links {
		p := filepath.Join(root, name)
		os.RemoveAll(p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var hostileSettings = Settings{
	RootPasswordHash: "$6$salt$hash",
	AuthorizedKeys:   []string{"ssh-ed25519 AAAA admin@site"},
	Mounts:           []Mount{{Source: "files:/home", Target: "/home", Type: "nfs"}},
	NIS:              &NIS{Domain: "cluster", Server: "10.0.0.1"},
}

// TestPrepareStaysInsideTheRoot: an image whose /etc/shadow, /etc/ssh,
// /root/.ssh, /etc/systemd... are symlinks to the master's files. On the
// node those links point inside the image, and so they must for bootd:
// the master's files stay byte-identical and the writes land in the image.
func TestPrepareStaysInsideTheRoot(t *testing.T) {
	master := fakeMaster(t)
	root := escapingRoot(t, master)
	// What the links name, as the node sees them: inside the image.
	mirror := filepath.Join(root, master)
	for name, content := range map[string]string{
		"shadow":                       "root:*:19000:0:99999:7:::\n",
		"nsswitch.conf":                "passwd: files\ngroup: files\nshadow: files\n",
		"hosts":                        "",
		"ssh/ssh_host_rsa_key":         "IMAGE KEY\n",
		"ssh/ssh_host_ed25519_key":     "IMAGE KEY\n",
		"ssh/ssh_host_ed25519_key.pub": "IMAGE KEY\n",
		"dotssh/.keep":                 "",
		"systemd/.keep":                "",
		"network/.keep":                "",
	} {
		os.MkdirAll(filepath.Join(mirror, filepath.Dir(name)), 0o755)
		os.WriteFile(filepath.Join(mirror, name), []byte(content), 0o644)
	}
	before := snapshot(t, master)
	if _, err := Prepare(root, hostileSettings); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "the master", before, snapshot(t, master))

	// The writes are in the image: through the links, resolved inside it,
	// or in place of a link where a file is replaced.
	inImage := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("%s is not in the image: %v", name, err)
		}
		return string(b)
	}
	if s := inImage("etc/shadow"); !strings.HasPrefix(s, "root:$6$salt$hash:") {
		t.Errorf("the image's shadow: %q", s)
	}
	if k := inImage(filepath.Join(master, "dotssh/authorized_keys")); k != "ssh-ed25519 AAAA admin@site\n" {
		t.Errorf("the image's authorized_keys: %q", k)
	}
	if !strings.Contains(inImage(filepath.Join(master, "systemd/system/systemd-networkd-wait-online.service.d/bootd.conf")), "--any") {
		t.Error("the networkd drop-in is not in the image")
	}
	if !strings.Contains(inImage("etc/nsswitch.conf"), "passwd: files nis") {
		t.Errorf("the image's nsswitch.conf: %q", inImage("etc/nsswitch.conf"))
	}
	if !strings.Contains(inImage("etc/hosts"), "localhost") {
		t.Error("the image's hosts")
	}
	if _, err := os.Lstat(filepath.Join(mirror, "ssh/ssh_host_ed25519_key")); err == nil {
		t.Error("the image's host key (behind an absolute /etc/ssh link) is still there")
	}
}

// TestPrepareRefusesDanglingEscapes: the same links with nothing behind
// them inside the image, each step on its own (so that one failing does
// not hide the next). A step may fail, but it never reaches the master.
func TestPrepareRefusesDanglingEscapes(t *testing.T) {
	for _, st := range Steps {
		for _, s := range []Settings{hostileSettings, {RootPasswordHash: "$6$x"}, {}} {
			master := fakeMaster(t)
			root := escapingRoot(t, master)
			before := snapshot(t, master)
			err := st.Do(root, s)
			t.Logf("%s: %v", st.Name, err)
			sameTree(t, "the master, after "+st.Name, before, snapshot(t, master))
		}
	}
}

// TestPrepareHostKeysPerBoot: the prepared image carries no SSH host
// private (or public) keys; a unit enabled for ssh makes them at boot.
func TestPrepareHostKeysPerBoot(t *testing.T) {
	root := fakeRoot(t)
	for _, k := range []string{"rsa", "ecdsa", "ed25519"} {
		for _, suffix := range []string{"", ".pub"} {
			p := filepath.Join(root, "etc/ssh/ssh_host_"+k+"_key"+suffix)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("key"), 0o600)
		}
	}
	os.WriteFile(filepath.Join(root, "etc/ssh/sshd_config"), []byte("Include /etc/ssh/sshd_config.d/*.conf\n"), 0o644)
	if _, err := Prepare(root, Settings{}); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*")); len(m) != 0 {
		t.Errorf("host keys left in the image: %v", m)
	}
	unit := read(t, root, "etc/systemd/system/"+hostKeyUnit)
	for _, want := range []string{
		"ssh-keygen -q -N '' -t ed25519 -f /etc/ssh/ssh_host_ed25519_key",
		"ssh-keygen -q -N '' -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key",
		"Before=ssh.service", "Type=oneshot",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q:\n%s", hostKeyUnit, want, unit)
		}
	}
	if strings.Contains(unit, "-t rsa") || strings.Contains(unit, "ssh_host_rsa") {
		t.Errorf("%s makes an RSA key:\n%s", hostKeyUnit, unit)
	}
	for _, wants := range []string{"ssh.service.wants", "sshd.service.wants", "ssh.socket.wants", "sshd@.service.wants"} {
		l, err := os.Readlink(filepath.Join(root, "etc/systemd/system", wants, hostKeyUnit))
		if err != nil || l != "/etc/systemd/system/"+hostKeyUnit {
			t.Errorf("%s not enabled in %s: %q %v", hostKeyUnit, wants, l, err)
		}
	}
	conf := read(t, root, "etc/ssh/sshd_config.d/bootd-hostkeys.conf")
	if !strings.Contains(conf, "HostKey /etc/ssh/ssh_host_ed25519_key\n") || !strings.Contains(conf, "HostKey /etc/ssh/ssh_host_ecdsa_key\n") || strings.Contains(conf, "ssh_host_rsa") {
		t.Errorf("sshd drop-in:\n%s", conf)
	}
	for _, st := range Steps {
		if st.Name == "services" && (!strings.Contains(st.Why, "at boot") || !strings.Contains(st.Why, "hook")) {
			t.Errorf("the services step does not say what it does with host keys: %s", st.Why)
		}
	}
}

// TestMountsRefused: image.mounts must not put a path outside the image
// (or a relative one) nor a second line into /etc/fstab.
func TestMountsRefused(t *testing.T) {
	ok := Mount{Source: "files:/home", Target: "/home", Type: "nfs", Options: "vers=3"}
	for _, c := range []struct {
		m     Mount
		field string
	}{
		{Mount{Source: "LABEL=x", Target: "scratch", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/../../etc", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/scratch/../etc", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x", Target: "/scr atch", Type: "ext4"}, "image.mounts[1].target"},
		{Mount{Source: "LABEL=x /dev/sda1", Target: "/scratch", Type: "ext4"}, "image.mounts[1].source"},
		{Mount{Source: "LABEL=x\n/dev/sda1 /etc ext4 defaults 0 0\n#", Target: "/scratch", Type: "ext4"}, "image.mounts[1].source"},
		{Mount{Source: "", Target: "/scratch", Type: "ext4"}, "image.mounts[1].source"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: "ext4\tdefaults"}, "image.mounts[1].type"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: ""}, "image.mounts[1].type"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: "ext4", Options: "rw\n/dev/sdb /var ext4 defaults"}, "image.mounts[1].options"},
		{Mount{Source: "LABEL=x", Target: "/scratch", Type: "ext4", Options: "rw 0 0"}, "image.mounts[1].options"},
	} {
		root := fakeRoot(t)
		s := Settings{Mounts: []Mount{ok, c.m}}
		_, err := Prepare(root, s)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("mount %+v: %v, want an error naming %s", c.m, err, c.field)
		}
		if b, err := os.ReadFile(filepath.Join(root, "etc/fstab")); err == nil && strings.Contains(string(b), "sda") {
			t.Errorf("mount %+v: injected into fstab:\n%s", c.m, b)
		}
		if err := Check(store.New(t.TempDir()), BuildOptions{Name: "ok", Suite: "bookworm", Settings: s}); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("Check, mount %+v: %v, want an error naming %s", c.m, err, c.field)
		}
	}
	// A good one still goes in.
	root := fakeRoot(t)
	if _, err := Prepare(root, Settings{Mounts: []Mount{ok}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read(t, root, "etc/fstab"), "files:/home\t/home\tnfs\tvers=3,nofail,_netdev\t0\t0\n") {
		t.Errorf("fstab:\n%s", read(t, root, "etc/fstab"))
	}
}

// TestPrepareRefusesSpecialFiles: a FIFO where a step writes a file is
// refused, not opened (which would hang the build for want of a reader).
func TestPrepareRefusesSpecialFiles(t *testing.T) {
	root := fakeRoot(t)
	os.Remove(filepath.Join(root, "etc/hosts"))
	if err := unix.Mkfifo(filepath.Join(root, "etc/hosts"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- stepHostname(root, Settings{}) }()
	select {
	case err := <-done:
		// ENXIO (no reader), or "not a regular file" (one is there).
		if err == nil || !strings.Contains(err.Error(), "/etc/hosts") {
			t.Errorf("writing over a FIFO: %v, want a refusal", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writing /etc/hosts hung on a FIFO")
	}
}

// execLine splits a unit's Exec line as systemd does for what the report
// unit uses: the "-" prefix, words in double quotes with C escapes, %%,
// and $$ and ${VAR} from env. Anything else fails, so that the unit can
// only pass with what this reproduces faithfully.
func execLine(t *testing.T, line string, env map[string]string) []string {
	t.Helper()
	line = strings.TrimPrefix(line, "-")
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\':
			i++
			if i == len(line) {
				t.Fatalf("trailing backslash in %q", line)
			}
			e, ok := map[byte]byte{'\\': '\\', '"': '"', '\'': '\'', 'n': '\n', 'r': '\r', 't': '\t'}[line[i]]
			if !ok {
				t.Fatalf("escape \\%c: not one systemd reads as this test does", line[i])
			}
			w.WriteByte(e)
			inWord = true
		case c == '"':
			quoted, inWord = !quoted, true
		case c == '\'' && !quoted:
			t.Fatalf("single quote outside double quotes at %d of %q", i, line)
		case c == '%':
			if i+1 == len(line) || line[i+1] != '%' {
				t.Fatalf("specifier at %d of %q", i, line)
			}
			i++
			w.WriteByte('%')
			inWord = true
		case (c == ' ' || c == '\t') && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	// Environment substitution, on each word at exec time.
	for i, word := range words {
		var out strings.Builder
		for j := 0; j < len(word); j++ {
			if word[j] != '$' {
				out.WriteByte(word[j])
				continue
			}
			switch {
			case strings.HasPrefix(word[j:], "$$"):
				out.WriteByte('$')
				j++
			case strings.HasPrefix(word[j:], "${"):
				end := strings.IndexByte(word[j:], '}')
				if end < 0 {
					t.Fatalf("unterminated ${ in %q", word)
				}
				out.WriteString(env[word[j+2:j+end]])
				j += end
			default:
				t.Fatalf("bare $ in word %q: systemd would split it", word)
			}
		}
		words[i] = out.String()
	}
	return words
}

// unitKey returns the value of the one line KEY= of a unit.
func unitKey(t *testing.T, unit, key string) string {
	t.Helper()
	var vals []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			vals = append(vals, v)
		}
	}
	if len(vals) != 1 {
		t.Fatalf("%s= appears %d times in the unit:\n%s", key, len(vals), unit)
	}
	return vals[0]
}

// TestPrepareReportUnit runs the report unit's ExecStart and ExecStop as
// systemd would, with bash, against an HTTP server standing for bootd:
// each sends one well-formed report, the init's report.env supplying who
// the node is.
func TestPrepareReportUnit(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	root := fakeRoot(t)
	if _, err := Prepare(root, Settings{}); err != nil {
		t.Fatal(err)
	}
	unit := read(t, root, "etc/systemd/system/"+reportUnit)
	for _, want := range []string{"[Unit]\n", "ConditionPathExists=" + boot.ReportEnv + "\n", "After=multi-user.target\n",
		"Type=oneshot\n", "RemainAfterExit=yes\n", "EnvironmentFile=" + boot.ReportEnv + "\n", "WantedBy=multi-user.target\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q:\n%s", reportUnit, want, unit)
		}
	}
	if strings.Contains(unit, "network-online") {
		t.Errorf("%s waits for the network, which is up since the initrd:\n%s", reportUnit, unit)
	}
	if l, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants", reportUnit)); err != nil || l != "/etc/systemd/system/"+reportUnit {
		t.Errorf("%s not enabled for multi-user.target: %q %v", reportUnit, l, err)
	}

	type got struct {
		method, path, ctype, proto string
		length                     int64
		body                       map[string]any
		raw                        string
	}
	reports := make(chan got, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g := got{method: r.Method, path: r.URL.Path, ctype: r.Header.Get("Content-Type"), proto: r.Proto, length: r.ContentLength, raw: string(b)}
		json.Unmarshal(b, &g.body)
		reports <- g
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	// As bootd-init writes it.
	envFile := fmt.Sprintf("# comment\nBOOTD_REPORT='%s'\nBOOTD_REPORT_HOST='%s'\nBOOTD_REPORT_PORT='%d'\nBOOTD_MAC='52:54:00:12:34:56'\nBOOTD_IMAGE='bookworm'\nBOOTD_GENERATION='3'\nBOOTD_HOSTNAME='node01'\n",
		ap, ap.Addr(), ap.Port())
	env := map[string]string{}
	for _, l := range strings.Split(envFile, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			env[k] = strings.Trim(v, "'")
		}
	}
	for _, c := range []struct{ key, stage, detail, timeout string }{{"ExecStart", "up", "multi-user reached", "30"}, {"ExecStop", "down", "shutting down", "5"}} {
		argv := execLine(t, unitKey(t, unit, c.key), env)
		if argv[0] != "/usr/bin/timeout" || argv[1] != c.timeout || argv[2] != "/bin/bash" {
			t.Fatalf("%s runs %q, want timeout %s bash", c.key, argv, c.timeout)
		}
		cmd := exec.Command(bash, argv[3:]...)
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v %s", c.key, err, out)
		}
		var g got
		select {
		case g = <-reports:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s sent no report (%s)", c.key, out)
		}
		if g.method != "POST" || g.path != boot.ReportPath || g.ctype != "application/json" || g.proto != "HTTP/1.0" || g.length != int64(len(g.raw)) {
			t.Errorf("%s: %s %s %s, Content-Type %q, Content-Length %d for %d bytes", c.key, g.method, g.path, g.proto, g.ctype, g.length, len(g.raw))
		}
		want := map[string]any{"mac": "52:54:00:12:34:56", "stage": c.stage, "image": "bookworm", "generation": 3.0, "hostname": "node01"}
		for k, v := range want {
			if g.body[k] != v {
				t.Errorf("%s: %s is %v, want %v in %s", c.key, k, g.body[k], v, g.raw)
			}
		}
		if d, _ := g.body["detail"].(string); !strings.HasPrefix(d, c.detail+" at uptime ") || len(g.body) != 6 {
			t.Errorf("%s: body %s", c.key, g.raw)
		}
	}

	// A refusal is said (for the journal), and the line still exits at
	// once; "-" keeps the unit from failing.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad report field: mac", http.StatusBadRequest)
	}))
	defer refuse.Close()
	rap := netip.MustParseAddrPort(refuse.Listener.Addr().String())
	env["BOOTD_REPORT"], env["BOOTD_REPORT_PORT"] = rap.String(), fmt.Sprint(rap.Port())
	argv := execLine(t, unitKey(t, unit, "ExecStart"), env)
	cmd := exec.Command(bash, argv[3:]...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bootd answered HTTP/1.0 400 Bad Request\n") {
		t.Errorf("a refused report: %v %q", err, out)
	}
	if !strings.HasPrefix(unitKey(t, unit, "ExecStart"), "-") || !strings.HasPrefix(unitKey(t, unit, "ExecStop"), "-") {
		t.Error("a failed report would fail the unit")
	}
}

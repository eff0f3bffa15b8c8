package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/store"
)

// commandPaths lists every command of the tree as its words after
// "bootd", the root as none.
func commandPaths(c *cobra.Command, path []string) [][]string {
	out := [][]string{path}
	for _, sub := range c.Commands() {
		out = append(out, commandPaths(sub, append(append([]string(nil), path...), sub.Name()))...)
	}
	return out
}

// runCLI runs a command line in process.
func runCLI(args ...string) (code int, stdout, stderr string) {
	return runRoot(newRoot(&app{}), args)
}

func runRoot(root *cobra.Command, args []string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(root, args, &o, &e)
	return code, o.String(), e.String()
}

var errRan = errors.New("the verb would have run")

// runNoVerb runs a command line in process, but no verb that does
// something (lab up starts QEMU): reaching one is a failure.
func runNoVerb(args ...string) (code int, stdout, stderr string) {
	root := newRoot(&app{})
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if cmd.Name() == "help" || cmd.HasSubCommands() {
			return nil // they only print help or refuse
		}
		return errRan
	}
	return runRoot(root, args)
}

func with(path []string, more ...string) []string {
	return append(append([]string(nil), path...), more...)
}

// TestEveryCommandHelpAndUsage runs the help and usage-error forms of
// every command in the tree. The config named does not exist: a command
// that read it would fail (exit 1) instead.
func TestEveryCommandHelpAndUsage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	paths := commandPaths(newRoot(&app{}), nil)
	if len(paths) < 30 {
		t.Fatalf("only %d commands in the tree: %q", len(paths), paths)
	}
	for _, p := range paths {
		name := strings.Join(with([]string{"bootd"}, p...), " ")
		helps := [][]string{with(p, "--help", "--config", missing), with(p, "-h"), with(append([]string{"help"}, p...))}
		if c, _, _ := newRoot(&app{}).Find(p); c.HasAvailableSubCommands() && len(p) > 0 {
			helps = append(helps, with(p, "help"))
		}
		for _, args := range helps {
			code, out, errOut := runNoVerb(args...)
			if code != 0 || errOut != "" || !strings.Contains(out, "Usage:") || !strings.Contains(out, name) {
				t.Errorf("bootd %q: exit %d, stdout %.80q, stderr %q; want exit 0 and %s's help on stdout only", args, code, out, errOut, name)
			}
		}
		for _, args := range [][]string{
			with(p, "--no-such-flag", "--config", missing),
			with(p, "w1", "w2", "w3", "w4", "--config", missing),
		} {
			code, out, errOut := runNoVerb(args...)
			if code != exitUsage || out != "" || !strings.Contains(errOut, "Usage:") {
				t.Errorf("bootd %q: exit %d, stdout %.80q, stderr %.200q; want exit %d and the usage on stderr only", args, code, out, errOut, exitUsage)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, args := range [][]string{
		{},
		{"nosuchverb"},
		{"image"},
		{"image", "lsit"},
		{"help", "image", "nosuch"},
		{"serve", "--log-level", "loud"},
		{"serve", "--log-format", "xml"},
		{"nodes", "export", "--format", "bind"},
		{"nodes", "show"},
		{"image", "gc", "x", "--keep", "many"},
		{"image", "publish", "x", "0"},
		{"image", "diff", "x", "1", "two"},
		{"image", "import", "./image.tar"},
		{"initrd", "build"},
		{"lab", "up", "--firmware", "coreboot"},
		{"lab", "up", "--nodes", "0"},
		{"gen-docs"},
	} {
		code, out, errOut := runNoVerb(with(args, "--config", missing)...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "Usage:") {
			t.Errorf("bootd %q: exit %d, stdout %.80q, stderr %.200q; want exit %d, usage on stderr", args, code, out, errOut, exitUsage)
		}
	}
}

func TestFailureExitsOne(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, args := range [][]string{
		{"serve"},
		{"image", "list"},
		{"config", "check"},
		{"nodes", "export", "--format", "dnsmasq"},
		{"initrd", "build", "--image", "x"},
	} {
		code, _, errOut := runCLI(with(args, "--config", missing)...)
		prefix := strings.Join(with([]string{"bootd"}, args[:min(2, len(args))]...), " ") + ": "
		if args[0] == "serve" {
			prefix = "bootd serve: "
		}
		if code != exitFailure || !strings.HasPrefix(errOut, prefix) || !strings.Contains(errOut, missing) || strings.Contains(errOut, "Usage:") {
			t.Errorf("bootd %q with a missing config: exit %d, stderr %q; want exit %d, %q and the file named, no usage", args, code, errOut, exitFailure, prefix)
		}
	}
}

// testConfig writes a valid config with its own state directory.
func testConfig(t *testing.T) (path, state string) {
	dir := t.TempDir()
	state = filepath.Join(dir, "state")
	path = filepath.Join(dir, "bootd.yaml")
	cfg := fmt.Sprintf(`state_dir: %s
interface: lo
dhcp:
  mode: "off"
tftp:
  listen: ""
nfs:
  allow: ["10.0.0.0/24"]
nodes:
  - mac: "52:54:00:00:00:01"
    hostname: node01
    ip: 10.0.0.5
`, state)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, state
}

func bootd(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return code, o.String(), e.String()
}

func TestInterspersedFlags(t *testing.T) {
	cfg, state := testConfig(t)
	writeGen(t, store.New(state), "demo", 1, true)
	// --config between the verb and its sub-verb: the store it names is
	// the one listed.
	code, out, errOut := bootd(t, bootdBin, "image", "--config", cfg, "list")
	if code != 0 || !strings.Contains(out, "demo") {
		t.Errorf("image --config F list: exit %d, stdout %q, stderr %q; want demo listed", code, out, errOut)
	}
	code, out, errOut = bootd(t, bootdBin, "nodes", "export", "--format", "dnsmasq", "--config", cfg)
	if code != 0 || !strings.Contains(out, "52:54:00:00:00:01") || !strings.Contains(out, "node01") {
		t.Errorf("nodes export --format dnsmasq --config F: exit %d, stdout %q, stderr %q; want node01's entry", code, out, errOut)
	}
	// A stray word is refused; it never drops the flags after it.
	code, out, errOut = bootd(t, bootdBin, "nodes", "export", "extra", "--format", "dnsmasq", "--config", cfg)
	if code != exitUsage || out != "" || !strings.Contains(errOut, `"extra"`) {
		t.Errorf("nodes export extra ...: exit %d, stdout %q, stderr %q; want exit %d naming the stray word", code, out, errOut, exitUsage)
	}
}

func TestVersionFromLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bootd")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.version=9.8.7-test -X main.commit=0123456789abcdef", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := fmt.Sprintf("bootd 9.8.7-test (commit 0123456789ab, %s)\n", runtime.Version())
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if code, out, errOut := bootd(t, bin, args...); code != 0 || out != want {
			t.Errorf("bootd %s: exit %d, stdout %q, stderr %q; want %q", args[0], code, out, errOut, want)
		}
	}
	// Without -ldflags: what the build knows, never an empty version.
	if code, out, _ := bootd(t, bootdBin, "--version"); code != 0 || !strings.HasPrefix(out, "bootd ") || strings.HasPrefix(out, "bootd  ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("bootd --version without ldflags: exit %d, %q", code, out)
	}
}

func TestConfigCheck(t *testing.T) {
	path, _ := testConfig(t)
	code, out, errOut := runCLI("config", "check", "--config", path)
	if code != 0 {
		t.Fatalf("config check: exit %d, stderr %q", code, errOut)
	}
	want, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// What it prints is a config that gives the same effective values,
	// with every default written out.
	got, err := config.Parse(path, []byte(out))
	if err != nil {
		t.Fatalf("config check's output does not parse: %v\n%s", err, out)
	}
	var a, b bytes.Buffer
	if err := writeEffective(&a, got); err != nil {
		t.Fatal(err)
	}
	writeEffective(&b, want)
	if a.String() != b.String() {
		t.Errorf("config check's output parses to\n%s\nwant\n%s", &a, &b)
	}
	if !reflect.DeepEqual(got.Table().All(), want.Table().All()) {
		t.Errorf("config check's output has the node table\n%+v\nwant\n%+v", got.Table().All(), want.Table().All())
	}
	for _, key := range []string{"state_dir:", "max_nodes: 4096", "unknown_nodes: boot", "hostname: node01"} {
		if !strings.Contains(out, key) {
			t.Errorf("config check's output lacks %q:\n%s", key, out)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("state_dir: /var/lib/bootd\nnfs:\n  allow: [10.0.0.0/24]\nunknown_nodes: maybe\n"), 0o644)
	code, out, errOut = runCLI("config", "check", "--config", bad)
	if code != exitFailure || out != "" || !strings.Contains(errOut, bad) || !strings.Contains(errOut, "unknown_nodes") {
		t.Errorf("config check of a bad config: exit %d, stdout %q, stderr %q; want exit 1 naming the file and key", code, out, errOut)
	}
}

func TestGenDocs(t *testing.T) {
	dir := t.TempDir()
	man, compl := filepath.Join(dir, "man"), filepath.Join(dir, "compl")
	if code, _, errOut := runCLI("gen-docs", "--man", man, "--completion", compl); code != 0 {
		t.Fatalf("gen-docs: exit %d: %s", code, errOut)
	}
	page, err := os.ReadFile(filepath.Join(man, "bootd.8"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte(`.TH "BOOTD" "8"`)) || !bytes.Contains(page, []byte("--log-format")) {
		t.Errorf("bootd.8 is not section 8 with the root's flags:\n%s", page)
	}
	// Every verb's page, from the same text as its help.
	_, help, _ := runCLI("lab", "up", "--help")
	sub, err := os.ReadFile(filepath.Join(man, "bootd-lab-up.8"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := newRoot(&app{}).Find([]string{"lab", "up"})
	long, _, _ := strings.Cut(c.Long, "\n")
	if !strings.Contains(help, long) || !bytes.Contains(sub, []byte(long)) || !bytes.Contains(sub, []byte(c.Short)) {
		t.Errorf("bootd-lab-up.8 and lab up --help do not both carry %q, or the page lacks %q", long, c.Short)
	}
	if _, err := os.Stat(filepath.Join(man, "bootd-gen-docs.8")); err == nil {
		t.Errorf("the hidden gen-docs has a man page")
	}
	script, err := os.ReadFile(filepath.Join(compl, "bootd"))
	if err != nil || !bytes.Contains(script, []byte("__start_bootd")) {
		t.Errorf("bash completion: %v, %.100q", err, script)
	}
}

// TestFailureUnderJournal: with stderr the journal, the error that ends
// bootd carries priority err like the log lines do.
func TestFailureUnderJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	cmd := exec.Command(bootdBin, "serve", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	cmd.Stderr = f
	cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	if err := cmd.Run(); err == nil {
		t.Fatal("serve with a missing config succeeded")
	}
	b, _ := os.ReadFile(f.Name())
	if !strings.HasPrefix(string(b), "<3>bootd serve: ") {
		t.Errorf("under the journal, serve's failure reads %q; want it at priority <3>", b)
	}
}

// The README's migration and DHCP-server steps, as an admin runs them:
// an export that can be run again, and dhcpd's hosts merged into
// bootd.yaml.
func TestNodesExportAndImport(t *testing.T) {
	cfg, _ := testConfig(t)
	dir := filepath.Dir(cfg)
	inc := filepath.Join(dir, "bootd-nodes.conf")
	for i, want := range []string{"written", "unchanged"} {
		code, out, errOut := bootd(t, bootdBin, "nodes", "export", "--config", cfg, "--format", "isc", "--output", inc)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("export --output, run %d: exit %d, %q %q; want %q", i+1, code, out, errOut, want)
		}
	}
	if b, _ := os.ReadFile(inc); !strings.Contains(string(b), "52:54:00:00:00:01") {
		t.Fatalf("the include file lacks node01: %q", b)
	}
	if code, _, _ := bootd(t, bootdBin, "nodes", "export", "--config", cfg, "--next-server", "master.example"); code != 2 {
		t.Errorf("--next-server with a host name: exit %d, want 2", code)
	}

	dhcpd := filepath.Join(dir, "dhcpd.conf")
	os.WriteFile(dhcpd, []byte(`subnet 10.0.0.0 netmask 255.255.255.0 {
  group {
    host node02 { hardware ethernet 52:54:00:00:00:02; fixed-address 10.0.0.6; }
  }
}
host node03 { hardware ethernet 52:54:00:00:00:03; fixed-address 10.0.0.7; option host-name "n3"; }
`), 0o644)
	code, out, errOut := bootd(t, bootdBin, "nodes", "import", "--format", "isc", dhcpd)
	if code != 0 || !strings.Contains(out, "52:54:00:00:00:02") || !strings.Contains(out, "n3") {
		t.Fatalf("import: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = bootd(t, bootdBin, "nodes", "import", "--format", "isc", dhcpd, "--merge", "--config", cfg)
	if code != 0 {
		t.Fatalf("import --merge: exit %d, %q %q", code, out, errOut)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatalf("the merged config: %v", err)
	}
	if got := len(c.Nodes); got != 3 {
		t.Errorf("after the merge the config has %d nodes, want 3 (node01 kept, node02 and n3 added)", got)
	}
	// A host whose address another node of the config has: the merge
	// would make an invalid config, so the file stays as it was.
	before, _ := os.ReadFile(cfg)
	os.WriteFile(dhcpd, []byte("host clash { hardware ethernet 52:54:00:00:00:09; fixed-address 10.0.0.5; }\n"), 0o644)
	if code, _, _ := bootd(t, bootdBin, "nodes", "import", dhcpd, "--merge", "--config", cfg); code != 1 {
		t.Errorf("a merge into an invalid config: exit %d, want 1", code)
	}
	if after, _ := os.ReadFile(cfg); !bytes.Equal(before, after) {
		t.Error("a refused merge changed the config")
	}
}

// The store's hygiene through the commands an admin types: list names a
// dangling current instead of hiding it, rm --all removes a whole image.
func TestImageListProblemsAndRmAll(t *testing.T) {
	cfg, state := testConfig(t)
	st := store.New(state)
	writeGen(t, st, "demo", 1, true)
	writeGen(t, st, "gone", 1, true)
	// gone's only generation vanishes behind its back: current dangles.
	if err := os.RemoveAll(st.GenDir("gone", 1)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := bootd(t, bootdBin, "image", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "demo") || !strings.Contains(errOut, "gone") {
		t.Errorf("image list: exit %d, stdout %q, stderr %q; want demo listed and gone's dangling current named", code, out, errOut)
	}
	if code, _, _ := bootd(t, bootdBin, "image", "rm", "demo", "--config", cfg); code != 2 {
		t.Errorf("image rm NAME without GEN or --all: exit %d, want 2", code)
	}
	code, out, errOut = bootd(t, bootdBin, "image", "rm", "demo", "--all", "--config", cfg)
	if code != 0 {
		t.Fatalf("image rm demo --all: exit %d, %q %q", code, out, errOut)
	}
	if _, err := os.Lstat(filepath.Join(state, "images", "demo")); !os.IsNotExist(err) {
		t.Errorf("images/demo after rm --all: %v", err)
	}
}

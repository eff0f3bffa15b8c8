package main

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/store"
)

// problemKeys lists the keys of r's problems, "!" before fatal ones.
func problemKeys(r checkResult) []string {
	var out []string
	for _, p := range r.Problems {
		k := p.Key
		if p.Fatal {
			k = "!" + k
		}
		out = append(out, k)
	}
	return out
}

// writeGen makes generation gen of image name, with its boot files when
// boot is set, and publishes it.
func writeGen(t *testing.T, st *store.Store, name string, gen int, boot bool) {
	t.Helper()
	if err := os.MkdirAll(st.RootDir(name, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	// Publish refuses a generation without boot files, so a current one
	// without them is one whose files went after it was published.
	os.MkdirAll(st.BootDir(name, gen), 0o755)
	os.WriteFile(filepath.Join(st.BootDir(name, gen), "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(st.BootDir(name, gen), "initrd.img"), []byte("initrd"), 0o644)
	os.WriteFile(filepath.Join(st.GenDir(name, gen), "image.json"), []byte(`{"kernel":"6.1.0-28-amd64"}`), 0o644)
	if err := st.Publish(name, gen); err != nil {
		t.Fatal(err)
	}
	if !boot {
		os.RemoveAll(st.BootDir(name, gen))
	}
}

func TestCheckServe(t *testing.T) {
	state := t.TempDir()
	st := store.New(state)
	writeGen(t, st, "good", 1, true)
	writeGen(t, st, "noboot", 2, false)
	writeGen(t, st, "spare", 1, true)
	table, err := nodes.NewTable([]nodes.Node{
		{MAC: "52:54:00:bd:00:01", Image: "good"},
		{MAC: "52:54:00:bd:00:02", Image: "noboot"},
		{MAC: "52:54:00:bd:00:03", Image: "absent"},
		{MAC: "52:54:00:bd:00:04"}, // no image, no defaults.image
		{MAC: "52:54:00:bd:00:05", Image: "good"},
	})
	if err != nil {
		t.Fatal(err)
	}
	loaders := map[string]string{}
	for _, name := range []string{"pxelinux.0", "ldlinux.c32", "syslinux.efi", "ldlinux.e64"} {
		loaders[name] = filepath.Join(state, name)
		if name != "syslinux.efi" {
			os.WriteFile(loaders[name], []byte("loader"), 0o644)
		}
	}
	planner := boot.NewPlanner(boot.Options{Nodes: table, Store: st, BootUnknown: true, Loaders: loaders})
	in := checkInput{StateDir: state, Planner: planner, Writes: []string{"run"}, Loaders: true}
	r := checkServe(in)
	want := []string{"defaults.image", "images/absent", "images/noboot", "nodes[3].image", "tftp.loaders.syslinux.efi"}
	if got := problemKeys(r); !slices.Equal(got, want) {
		t.Errorf("problems %q, want %q:\n%+v", got, want, r.Problems)
	}
	byName := map[string]imageState{}
	for _, im := range r.Images {
		byName[im.Name] = im
	}
	if g := byName["good"]; g.Current != 1 || !g.HasKernel || !g.HasInitrd || g.Nodes != 2 || g.Kernel != "6.1.0-28-amd64" {
		t.Errorf("good: %+v", g)
	}
	if g := byName["noboot"]; g.Current != 2 || g.HasKernel || g.HasInitrd || g.Nodes != 1 {
		t.Errorf("noboot: %+v", g)
	}
	if g := byName["absent"]; g.Current != 0 || g.Nodes != 1 {
		t.Errorf("absent: %+v", g)
	}
	if g, ok := byName["spare"]; !ok || g.Nodes != 0 || g.Current != 1 {
		t.Errorf("an image of the store no node boots: %+v %v", g, ok)
	}

	// What an image build, an initrd build and an apt-get install fix
	// is gone at the next check; defaults.image set, so is the rest.
	writeGen(t, st, "absent", 1, true)
	writeGen(t, st, "noboot", 3, true)
	os.WriteFile(loaders["syslinux.efi"], []byte("loader"), 0o644)
	o := planner.Options()
	o.Defaults.Image = "good"
	planner.Update(o)
	if r := checkServe(in); len(r.Problems) != 0 {
		t.Errorf("problems after the fixes: %+v", r.Problems)
	}
	// Loaders that TFTP does not serve are not looked for.
	os.Remove(loaders["syslinux.efi"])
	in.Loaders = false
	if r := checkServe(in); len(r.Problems) != 0 {
		t.Errorf("problems with TFTP off: %+v", r.Problems)
	}
	// A current that points at a generation that is gone.
	os.RemoveAll(st.GenDir("good", 1))
	if got := problemKeys(checkServe(in)); !slices.Equal(got, []string{"images/good"}) {
		t.Errorf("dangling current: %q", got)
	}
}

// A state_dir serve cannot write is fatal, and so is a directory it
// writes under it that is no directory.
func TestCheckServeStateDir(t *testing.T) {
	planner := boot.NewPlanner(boot.Options{Store: store.New(t.TempDir())})
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	runFile := t.TempDir()
	os.WriteFile(filepath.Join(runFile, "run"), nil, 0o644)
	for dir, want := range map[string]string{
		filepath.Join(t.TempDir(), "missing"): "does not exist",
		file:                                  "is not a directory",
		runFile:                               "is not a directory",
		t.TempDir():                           "",
	} {
		r := checkServe(checkInput{StateDir: dir, Planner: planner, Writes: []string{"run", "logs"}})
		fatal := r.fatal()
		switch {
		case want == "" && len(fatal) != 0:
			t.Errorf("%s: %+v", dir, fatal)
		case want != "" && (len(fatal) != 1 || fatal[0].Key != "state_dir" || !strings.Contains(fatal[0].Message, want)):
			t.Errorf("%s: %+v, want one fatal state_dir problem saying %q", dir, fatal, want)
		}
	}
}

func TestChangedKeys(t *testing.T) {
	parse := func(y string) *config.Config {
		t.Helper()
		c, err := config.Parse("bootd.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse("state_dir: /srv/bootd\nnfs: {allow: [10.0.0.0/24]}\nnodes: [{mac: '52:54:00:bd:00:01'}]\n")
	b := parse("state_dir: /srv/bootd\nnfs: {allow: [10.0.0.0/24], listen: '0.0.0.0:2050'}\nnodes: [{mac: '52:54:00:bd:00:01'}, {mac: '52:54:00:bd:00:02'}]\n" +
		"unknown_nodes: ignore\ndefaults: {image: x}\nhttp: {boot: ipxe}\nimage: {mirror: 'http://deb.example/debian'}\ndhcp: {mode: 'off'}\n")
	got := changedKeys(a, b)
	want := []string{"defaults.image", "dhcp.mode", "http.boot", "image.mirror", "nfs.listen", "nodes", "unknown_nodes"}
	if !slices.Equal(got, want) {
		t.Errorf("changed %q, want %q", got, want)
	}
	var restart []string
	for _, k := range got {
		if needsRestart(k) {
			restart = append(restart, k)
		}
	}
	if want := []string{"dhcp.mode", "nfs.listen"}; !slices.Equal(restart, want) {
		t.Errorf("needs a restart: %q, want %q", restart, want)
	}
	if got := changedKeys(a, parse("state_dir: /srv/bootd\nnfs: {allow: [10.0.0.0/24]}\nnodes: [{mac: '52:54:00:bd:00:01'}]\n")); len(got) != 0 {
		t.Errorf("the same file: %q", got)
	}
}

// TestReloadRace: reloads that swap the table while the status API, the
// boot plan and the NFS squash read it; run with -race (the bootd binary
// the other tests start is built without it).
func TestReloadRace(t *testing.T) {
	state := t.TempDir()
	st := store.New(state)
	writeGen(t, st, "demo", 1, true)
	path := filepath.Join(t.TempDir(), "bootd.yaml")
	small := "state_dir: " + state + "\nnfs: {allow: [10.0.0.0/24]}\ndhcp: {mode: 'off'}\ntftp: {listen: ''}\nunknown_nodes: ignore\n" +
		"nodes: [{mac: '52:54:00:bd:00:01', image: demo}]\n"
	big := "state_dir: " + state + "\nnfs: {allow: [10.0.0.0/24]}\ndhcp: {mode: 'off'}\ntftp: {listen: ''}\nunknown_nodes: ignore\n" +
		"nodes: [{mac: '52:54:00:bd:00:01', image: demo}, {mac: '52:54:00:bd:00:02', image: demo, ip: 10.0.0.2}]\n"
	os.WriteFile(path, []byte(small), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	planner, _, err := newPlanner(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := newServeState(cfg, planner, netip.Addr{}, log, prometheus.NewRegistry())
	neighbors := newNeighborNodes("", planner.Node)
	s.onReload = neighbors.forget
	squash := squashUnknown(cfg, planner, neighbors, events.New(16))
	stop, done := make(chan struct{}), make(chan struct{})
	n2, _ := net.ParseMAC("52:54:00:bd:00:02")
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if st := s.status(); st.Nodes != 1 && st.Nodes != 2 {
				t.Errorf("status: %d nodes", st.Nodes)
			}
			planner.Plan(n2)
			squash(netip.MustParseAddr("10.0.0.2"))
		}
	}()
	for i := range 50 {
		body := small
		if i%2 == 0 {
			body = big
		}
		os.WriteFile(path, []byte(body), 0o644)
		if r := s.reload(); r.Error != "" {
			t.Fatal(r.Error)
		}
	}
	close(stop)
	<-done
	if s.status().Nodes != 1 {
		t.Errorf("after the last reload (1 node): %d", s.status().Nodes)
	}
	if squash(netip.MustParseAddr("10.0.0.2")) == false {
		t.Error("10.0.0.2 is no node's any more, yet not squashed")
	}
}

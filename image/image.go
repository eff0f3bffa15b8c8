// Package image builds Debian root trees for diskless nodes and keeps them
// as immutable generations in the image store: `bootd image build` runs
// mmdebstrap (debootstrap where mmdebstrap is absent) into a hidden
// directory, prepares the tree for diskless life (see Steps), generates
// its initrd, and only then renames it to its generation number and moves
// `current`. A failed or interrupted build leaves nothing behind and never
// touches `current`; nodes keep the generation they booted while newer
// ones are built and published.
package image

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/store"
)

// Suites bootd builds, by Debian release.
var Suites = map[string]string{"bookworm": "Debian 12", "trixie": "Debian 13"}

// DefaultMirror is used when neither the build nor the config names one.
const DefaultMirror = "http://deb.debian.org/debian"

// MinFreeBytes is the space a build needs before it starts.
var MinFreeBytes int64 = 2 << 30

// Meta is GEN/image.json: what a generation was built from.
type Meta struct {
	Name       string    `json:"name"`
	Generation int       `json:"generation"`
	Suite      string    `json:"suite"`
	Mirror     string    `json:"mirror"`
	Include    []string  `json:"include"`
	Hooks      []string  `json:"hooks,omitempty"`
	Tool       string    `json:"tool"`
	Built      time.Time `json:"built"`
	Seconds    float64   `json:"build_seconds"`
	Bytes      int64     `json:"bytes"`
	Prepared   []string  `json:"prepared"`
	Kernel     string    `json:"kernel"`
	// Parent, Update and Changed say, for a generation made by `image
	// update`, which generation it was made from, what was done, and how
	// many paths changed.
	Parent  int    `json:"parent,omitempty"`
	Update  string `json:"update,omitempty"`
	Changed int    `json:"changed,omitempty"`
}

// BuildOptions says what to build.
type BuildOptions struct {
	Name     string
	Suite    string
	Mirror   string
	Include  []string
	Hooks    []string // scripts run with the root as $1 after preparation
	Settings Settings
	// CacheDir keeps downloaded packages between builds.
	CacheDir string
	// Progress receives one line per phase and package step.
	Progress io.Writer
	// Initrd builds GEN/boot/{vmlinuz,initrd.img} from the prepared root.
	Initrd func(root, bootDir string) (kernel string, err error)
	// Publish moves current to the new generation.
	Publish bool
}

// Check says whether a build can start, with a clear reason if not.
func Check(st *store.Store, opt BuildOptions) error {
	if err := store.ValidName(opt.Name); err != nil {
		return err
	}
	if _, ok := Suites[opt.Suite]; !ok {
		var s []string
		for k := range Suites {
			s = append(s, k)
		}
		sort.Strings(s)
		return fmt.Errorf("suite %q: bootd builds %s", opt.Suite, strings.Join(s, " or "))
	}
	if err := CheckMounts(opt.Settings.Mounts); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("building an image needs root (the tree's files belong to root and other users, device nodes are made)")
	}
	if err := os.MkdirAll(st.ImagesDir(), 0o755); err != nil {
		return err
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(st.ImagesDir(), &fs); err == nil {
		if free := int64(fs.Bavail) * int64(fs.Bsize); free < MinFreeBytes {
			return fmt.Errorf("not enough space in %s: %d MiB free, a build needs %d MiB", st.ImagesDir(), free>>20, MinFreeBytes>>20)
		}
	}
	if tool() == "" {
		return errors.New("neither mmdebstrap nor debootstrap is installed (apt-get install mmdebstrap)")
	}
	for _, h := range opt.Hooks {
		if st, err := os.Stat(h); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("hook %s: not an executable file", h)
		}
	}
	return nil
}

// resolveHooks makes each hook one absolute path, once: the file Check
// looks at is the file run. A bare NAME is ./NAME, as Check has always
// taken it, never a program looked up in $PATH.
func resolveHooks(hooks []string) ([]string, error) {
	var out []string
	for _, h := range hooks {
		p, err := filepath.Abs(h)
		if err != nil {
			return nil, fmt.Errorf("hook %s: %w", h, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func runHooks(ctx context.Context, hooks []string, root string, progress io.Writer) error {
	for _, h := range hooks {
		if !filepath.IsAbs(h) {
			return fmt.Errorf("hook %s: not resolved to an absolute path (bootd never looks hooks up in $PATH)", h)
		}
		fmt.Fprintf(progress, "bootd image: running hook %s\n", h)
		cmd := exec.CommandContext(ctx, h, root)
		cmd.Stdout, cmd.Stderr = progress, progress
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hook %s: %w", h, err)
		}
	}
	return nil
}

func tool() string {
	for _, t := range []string{"mmdebstrap", "debootstrap"} {
		if _, err := exec.LookPath(t); err == nil {
			return t
		}
	}
	return ""
}

// Build bootstraps, prepares and (optionally) publishes a new generation.
func Build(ctx context.Context, st *store.Store, opt BuildOptions) (gen int, err error) {
	if opt.Hooks, err = resolveHooks(opt.Hooks); err != nil {
		return 0, err
	}
	if err := Check(st, opt); err != nil {
		return 0, err
	}
	if opt.Mirror == "" {
		opt.Mirror = opt.Settings.Mirror
	}
	if opt.Mirror == "" {
		opt.Mirror = DefaultMirror
	}
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bootd image: "+format+"\n", args...) }
	gen, work, err := newBuild(st, opt.Name)
	if err != nil {
		return 0, err
	}
	taken := gen // gen is 0 by the time a failing return runs the defer
	defer abandonUnlessDone(st, opt.Name, &taken, work, &err)
	start := time.Now()
	root := filepath.Join(work, "root")
	include := append(append(append([]string(nil), Packages...), opt.Settings.Include...), opt.Include...)
	if opt.Settings.NIS != nil && opt.Settings.NIS.Domain != "" {
		include = append(include, "nis")
	}
	sort.Strings(include)
	include = dedup(include)
	t := tool()
	say("building %s generation %d: %s (%s) from %s with %s, %d packages asked for", opt.Name, gen, opt.Suite, Suites[opt.Suite], opt.Mirror, t, len(include))
	if err := bootstrap(ctx, t, opt, include, root, say); err != nil {
		return 0, err
	}
	say("preparing for diskless life")
	prepared, err := Prepare(root, opt.Settings)
	if err != nil {
		return 0, err
	}
	if err := runHooks(ctx, opt.Hooks, root, progress); err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	meta := Meta{Name: opt.Name, Generation: gen, Suite: opt.Suite, Mirror: opt.Mirror, Include: include, Hooks: opt.Hooks,
		Tool: t, Built: time.Now().UTC().Truncate(time.Second), Prepared: prepared}
	if opt.Initrd != nil {
		say("generating the initrd")
		if meta.Kernel, err = opt.Initrd(root, filepath.Join(work, "boot")); err != nil {
			return 0, fmt.Errorf("generating the initrd: %w", err)
		}
	}
	meta.Bytes = treeSize(root)
	meta.Seconds = time.Since(start).Round(time.Second).Seconds()
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(work, "image.json"), b, 0o644); err != nil {
		return 0, err
	}
	// The generation appears whole, or not at all.
	if err := os.Rename(work, st.GenDir(opt.Name, gen)); err != nil {
		return 0, fmt.Errorf("finishing the build: %w", err)
	}
	say("built %s generation %d in %v (%d MiB)", opt.Name, gen, time.Since(start).Round(time.Second), meta.Bytes>>20)
	if opt.Publish {
		if err := st.Publish(opt.Name, gen); err != nil {
			return gen, err
		}
		say("published: new boots of %s get generation %d", opt.Name, gen)
	}
	return gen, nil
}

// newBuild takes an image's next generation number (never one used
// before) and makes the hidden directory it is built in.
func newBuild(st *store.Store, name string) (gen int, work string, err error) {
	if err := os.MkdirAll(filepath.Join(st.ImagesDir(), name), 0o755); err != nil {
		return 0, "", err
	}
	cleanStale(st, name)
	if gen, err = st.NewGeneration(name, 0); err != nil {
		return 0, "", err
	}
	work = st.BuildDir(name, gen)
	if err := os.Mkdir(work, 0o755); err != nil {
		return 0, "", fmt.Errorf("starting generation %d: %w", gen, err)
	}
	return gen, work, nil
}

// abandonUnlessDone undoes a build if *err is set: a build that does not
// finish leaves nothing behind. Its directory is removed; if it was the
// image's first, the image's directory goes too and the number it was
// given (taken; 0 if none yet) is given back, so the image never existed.
// A later build's number stays used: its progress lines named it, and
// the admin's scrollback must not name two different trees.
func abandonUnlessDone(st *store.Store, name string, taken *int, work string, err *error) {
	if *err == nil {
		return
	}
	if rerr := removeBuild(work); rerr != nil {
		*err = fmt.Errorf("%w; and cleaning up: %v", *err, rerr)
		return
	}
	// rmdir: only an empty directory goes, so a generation, a current
	// link or another build in progress keeps it.
	if os.Remove(filepath.Dir(work)) != nil || *taken == 0 {
		return
	}
	if rerr := st.ReturnGeneration(name, *taken); rerr != nil {
		*err = fmt.Errorf("%w; and giving back generation number %d: %v", *err, *taken, rerr)
	}
}

func dedup(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func bootstrap(ctx context.Context, t string, opt BuildOptions, include []string, root string, say func(string, ...any)) error {
	var args []string
	switch t {
	case "mmdebstrap":
		args = []string{"--variant=minbase", "--components=main", "--include=" + strings.Join(include, ","), "--verbose",
			// bootd generates the initrd; initramfs-tools building its own
			// (twice, 30+ MiB each) would only cost a minute per build.
			"--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.bootd --add /usr/sbin/update-initramfs && ln -sf /bin/true \"$1\"/usr/sbin/update-initramfs"}
		if opt.CacheDir != "" {
			// Downloaded packages are kept between builds: a rebuild
			// fetches only what changed.
			cache := filepath.Join(opt.CacheDir, opt.Suite)
			if err := os.MkdirAll(cache, 0o755); err != nil {
				return err
			}
			args = append(args,
				"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && find '"+cache+"' -name '*.deb' -exec cp {} \"$1\"/var/cache/apt/archives/ \\;",
				"--customize-hook=find \"$1\"/var/cache/apt/archives -name '*.deb' -exec cp -n {} '"+cache+"'/ \\;",
				"--skip=download/empty")
		}
		args = append(args, opt.Suite, root, opt.Mirror)
	case "debootstrap":
		args = []string{"--variant=minbase", "--include=" + strings.Join(include, ",")}
		if opt.CacheDir != "" {
			cache := filepath.Join(opt.CacheDir, opt.Suite)
			os.MkdirAll(cache, 0o755)
			args = append(args, "--cache-dir="+cache)
		}
		args = append(args, opt.Suite, root, opt.Mirror)
	}
	cmd := exec.CommandContext(ctx, t, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Interrupting a build stops the whole bootstrap, chroot processes
	// included. SIGTERM first: mmdebstrap then unmounts what it mounted
	// in the chroot (/proc, /sys, /dev) before it exits.
	cmd.Cancel = func() error {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		go func() {
			time.Sleep(20 * time.Second)
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}()
		return nil
	}
	cmd.WaitDelay = 30 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", t, err)
	}
	var last []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			last = append(last, line)
			if len(last) > 20 {
				last = last[1:]
			}
			if phase := progressLine(line); phase != "" {
				say("%s", phase)
			}
		}
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if ctx.Err() != nil {
		return fmt.Errorf("build interrupted: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("%s failed: %v\n%s", t, err, strings.Join(last, "\n"))
	}
	return nil
}

// progressLine picks the lines worth showing from mmdebstrap's and
// debootstrap's output: phases, and packages being unpacked or set up.
func progressLine(l string) string {
	switch {
	case strings.HasPrefix(l, "I: "):
		return strings.TrimPrefix(l, "I: ")
	case strings.HasPrefix(l, "Unpacking "), strings.HasPrefix(l, "Setting up "):
		return "  " + l
	case strings.HasPrefix(l, "E: "), strings.HasPrefix(l, "W: "):
		return l
	}
	return ""
}

func treeSize(root string) int64 {
	var n int64
	filepath.Walk(root, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// Info is one generation as `bootd image list` shows it.
type Info struct {
	Name       string
	Generation int
	Current    bool
	Meta       Meta
	HasBoot    bool
	// NewBytes is the disk space the generation takes beyond the older
	// generations of its image: blocks of files it shares with them (an
	// update's hard links) are counted once, in the oldest.
	NewBytes int64
}

// List returns every generation of every image.
func List(st *store.Store) ([]Info, error) {
	names, err := st.Images()
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, n := range names {
		gens, err := st.Generations(n)
		if err != nil {
			return nil, err
		}
		cur, _ := st.Current(n)
		seen := map[[2]uint64]bool{}
		for _, g := range gens {
			i := Info{Name: n, Generation: g, Current: g == cur, NewBytes: newBytes(st.GenDir(n, g), seen)}
			if b, err := os.ReadFile(filepath.Join(st.GenDir(n, g), "image.json")); err == nil {
				json.Unmarshal(b, &i.Meta)
			}
			i.HasBoot = store.CheckBoot(st.GenDir(n, g)) == nil
			out = append(out, i)
		}
	}
	return out, nil
}

// newBytes sums the disk blocks under dir of the inodes not in seen, and
// adds them to it.
func newBytes(dir string, seen map[[2]uint64]bool) int64 {
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st := info.Sys().(*syscall.Stat_t)
		k := [2]uint64{st.Dev, st.Ino}
		if !seen[k] {
			seen[k] = true
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}

// GC removes the generations of an image that are not current, not run
// by any node (inUse), and older than the keep newest others. It returns
// the generations removed.
func GC(st *store.Store, name string, keep int, inUse func(name string, gen int) []string) ([]int, error) {
	gens, err := st.Generations(name)
	if err != nil {
		return nil, err
	}
	cur, _ := st.Current(name)
	var removed []int
	kept := 0
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		if g == cur || len(inUse(name, g)) > 0 {
			continue
		}
		if kept < keep {
			kept++
			continue
		}
		if err := Remove(st, name, g); err != nil {
			return removed, err
		}
		removed = append(removed, g)
	}
	return removed, nil
}

// Rollback makes the generation before the current one current.
func Rollback(st *store.Store, name string) (int, error) {
	cur, err := st.Current(name)
	if err != nil {
		return 0, err
	}
	gens, err := st.Generations(name)
	if err != nil {
		return 0, err
	}
	prev := 0
	for _, g := range gens {
		if g < cur {
			prev = g
		}
	}
	if prev == 0 {
		return 0, fmt.Errorf("image %q: generation %d is the oldest, there is nothing to roll back to", name, cur)
	}
	return prev, st.Publish(name, prev)
}

// Remove deletes a generation that is not current.
func Remove(st *store.Store, name string, gen int) error {
	if err := st.Has(name, gen); err != nil {
		return err
	}
	if cur, err := st.Current(name); err == nil && cur == gen {
		return fmt.Errorf("image %q generation %d is current: publish or roll back to another first", name, gen)
	}
	dir := st.GenDir(name, gen)
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", dir, err)
	}
	if mps := mountsBelow(real); len(mps) > 0 {
		return fmt.Errorf("image %q generation %d has filesystems mounted inside (%s): unmount them first; nothing was deleted", name, gen, strings.Join(mps, ", "))
	}
	// Rename first so the generation disappears at once for the servers,
	// then delete at leisure.
	trash := filepath.Join(filepath.Dir(real), filepath.Base(st.TrashDir(name, gen)))
	if err := os.Rename(real, trash); err != nil {
		return err
	}
	return removeGeneration(trash)
}

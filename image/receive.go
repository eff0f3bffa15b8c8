package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bootd/bootd/imageroot"
	"github.com/bootd/bootd/store"
)

// ReceiveOptions say how a generation made elsewhere enters the store:
// pulled from a registry (its tree and boot files as they were pushed,
// under the number it had), or imported from any Debian container image
// (prepared for diskless life here, under the next number).
type ReceiveOptions struct {
	Name string
	// Gen is the number the generation keeps (a pull: NFS handles name
	// the generation, so replicas serve it under the same number); 0
	// takes the next number.
	Gen int
	// Fill writes root/ (and, for a pull, boot/ and image.json) into the
	// hidden directory the generation is made in.
	Fill func(ctx context.Context, work string) error
	// Prepare installs what a diskless node needs and is missing (apt, in
	// the image, from its own sources) and runs the preparation steps.
	Prepare  bool
	Settings Settings
	// Initrd generates boot/ from the root, when it is not pulled.
	Initrd func(root, bootDir string) (kernel string, err error)
	// Check runs on the finished directory before it becomes a
	// generation (a pull compares the NFS fingerprint).
	Check func(work string) error
	// Meta is written as image.json when Fill wrote none.
	Meta     Meta
	Publish  bool
	Progress io.Writer
}

// Receive makes a generation from opt.Fill with the same contract as
// Build: a hidden directory, renamed into place only when complete, and
// removed if anything fails.
func Receive(ctx context.Context, st *store.Store, opt ReceiveOptions) (gen int, err error) {
	if os.Geteuid() != 0 {
		return 0, errors.New("receiving an image needs root (its files belong to root and other users, device nodes are made)")
	}
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bootd image: "+format+"\n", args...) }
	var work string
	taken := 0 // the number this receive was handed, to give back if it fails
	if opt.Gen > 0 {
		// The number is claimed when the generation is complete: a pull
		// that fails (a network error) may be tried again.
		gen = opt.Gen
		work, err = unnumberedBuild(st, opt.Name)
	} else {
		gen, work, err = newBuild(st, opt.Name)
		taken = gen
	}
	if err != nil {
		return 0, err
	}
	defer abandonUnlessDone(st, opt.Name, &taken, work, &err)
	start := time.Now()
	if err := opt.Fill(ctx, work); err != nil {
		return 0, err
	}
	root := filepath.Join(work, "root")
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		return 0, fmt.Errorf("the received generation has no root directory")
	}
	meta := opt.Meta
	if meta.Suite == "" {
		meta.Suite = osRelease(root, "VERSION_CODENAME")
	}
	if opt.Prepare {
		if missing := missingPackages(root); len(missing) > 0 {
			say("installing what a diskless node needs: %s", strings.Join(missing, " "))
			if err := installInto(ctx, root, missing, progress); err != nil {
				return 0, fmt.Errorf("installing %s into the image: %w", strings.Join(missing, " "), err)
			}
		}
		say("preparing for diskless life")
		if meta.Prepared, err = Prepare(root, opt.Settings); err != nil {
			return 0, err
		}
	}
	if opt.Initrd != nil {
		say("generating the initrd")
		if meta.Kernel, err = opt.Initrd(root, filepath.Join(work, "boot")); err != nil {
			return 0, fmt.Errorf("generating the initrd: %w", err)
		}
	}
	if err := store.CheckBoot(work); err != nil {
		return 0, fmt.Errorf("the received generation has %w", err)
	}
	if _, err := os.Lstat(filepath.Join(work, "image.json")); errors.Is(err, os.ErrNotExist) {
		meta.Name, meta.Generation = opt.Name, gen
		meta.Built = time.Now().UTC().Truncate(time.Second)
		meta.Bytes = treeSize(root)
		meta.Seconds = time.Since(start).Round(time.Second).Seconds()
		b, _ := json.MarshalIndent(meta, "", "  ")
		if err := os.WriteFile(filepath.Join(work, "image.json"), b, 0o644); err != nil {
			return 0, err
		}
	}
	if opt.Check != nil {
		if err := opt.Check(work); err != nil {
			return 0, err
		}
	}
	if opt.Gen > 0 {
		if err := st.ClaimGeneration(opt.Name, gen, 0); err != nil {
			return 0, err
		}
		taken = gen
	}
	if err := os.Rename(work, st.GenDir(opt.Name, gen)); err != nil {
		return 0, fmt.Errorf("finishing generation %d: %w", gen, err)
	}
	say("%s generation %d is in the store (%v)", opt.Name, gen, time.Since(start).Round(time.Second))
	if opt.Publish {
		if err := st.Publish(opt.Name, gen); err != nil {
			return gen, err
		}
		say("published: new boots of %s get generation %d", opt.Name, gen)
	}
	return gen, nil
}

// unnumberedBuild is the hidden directory of a generation whose number
// is claimed only when it is complete.
func unnumberedBuild(st *store.Store, name string) (string, error) {
	if err := os.MkdirAll(filepath.Join(st.ImagesDir(), name), 0o755); err != nil {
		return "", err
	}
	cleanStale(st, name)
	work := st.BuildDir(name, 0)
	if err := os.Mkdir(work, 0o755); err != nil {
		return "", fmt.Errorf("starting to receive %s: %w", name, err)
	}
	return work, nil
}

// missingPackages lists the packages of Packages that dpkg's status file
// does not have installed.
func missingPackages(root string) []string {
	installed := installedPackages(root)
	var missing []string
	for _, p := range Packages {
		if !installed[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	return missing
}

func installedPackages(root string) map[string]bool {
	b, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	out := map[string]bool{}
	for _, para := range strings.Split(string(b), "\n\n") {
		var pkg string
		ok := false
		for _, l := range strings.Split(para, "\n") {
			if v, found := strings.CutPrefix(l, "Package: "); found {
				pkg = v
			}
			if strings.HasPrefix(l, "Status: ") && strings.HasSuffix(l, " installed") && !strings.Contains(l, "not-installed") {
				ok = true
			}
		}
		if pkg != "" && ok {
			out[pkg] = true
		}
	}
	return out
}

// installInto runs apt in the image, with update-initramfs diverted as a
// build does (bootd makes the initrd).
func installInto(ctx context.Context, root string, pkgs []string, progress io.Writer) error {
	return runInChroot(ctx, root, UpdateOptions{Run: []string{
		"apt-get -q update",
		"dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.bootd --add /usr/sbin/update-initramfs && ln -sf /bin/true /usr/sbin/update-initramfs",
		"apt-get -q -y --no-install-recommends install " + strings.Join(pkgs, " "),
		"apt-get clean && find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -delete",
	}}, progress)
}

// osRelease reads one field of the image's os-release.
func osRelease(root, key string) string {
	r, err := imageroot.Open(root)
	if err != nil {
		return ""
	}
	defer r.Close()
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		b, err := r.ReadFile(p) // symlinks resolved inside the image
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, key+"="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return ""
}

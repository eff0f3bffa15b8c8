// Package initrd generates the initramfs that boots a diskless node from
// bootd, and (in package initrd/pid1) holds the init program inside it.
//
// The image needs no initramfs-tools, dracut, busybox or NFS utilities:
// the initrd is bootd's own static binary as /init, the kernel modules
// that binary loads (NIC drivers, NFSv3, overlayfs, netconsole) taken from
// the image's /lib/modules, and an index of exactly those modules. The init comes from
// the bootd binary the admin installed, so the master needs no Go
// toolchain. The same inputs give the same bytes: records are sorted and
// stripped of times and owners, and compression is single-threaded.
package initrd

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/u-root/u-root/pkg/kmodule"

	"github.com/bootd/bootd/imageroot"
)

// BaseModules are loaded on every boot, in this order with their
// dependencies: the NFS client (v3) and overlayfs. af_packet (DHCP's raw
// socket) is built into Debian's kernels; it is listed for kernels where
// it is not.
var BaseModules = []string{"af_packet", "nfsv3", "overlay"}

// NICModules are the network drivers the initrd carries: QEMU's, and the
// Intel, Broadcom, Mellanox, Realtek, Amazon, VMware and Hyper-V NICs of
// real clusters. Only those matching a device present at boot are loaded.
var NICModules = []string{
	"e1000", "e1000e", "igb", "igc", "ixgbe", "ixgbevf", "i40e", "iavf", "ice",
	"tg3", "bnx2", "bnx2x", "bnxt_en",
	"mlx4_en", "mlx5_core",
	"r8169", "8139cp", "8139too",
	"virtio_pci", "virtio_net", "vmxnet3", "ena", "hv_netvsc",
}

// OptionalModules are carried, with their dependencies, when the image's
// kernel has them, and the init loads them itself when it needs them:
// netconsole sends the kernel's messages to bootd (bootd.console). A
// kernel without one boots all the same.
var OptionalModules = []string{"netconsole"}

// Manifest is /etc/bootd-initrd.json inside the initrd: what the init
// loads and how the initrd was made.
type Manifest struct {
	Kernel string `json:"kernel"`
	// Load lists the modules loaded on every boot, in order.
	Load []string `json:"load"`
	// NIC lists the network drivers carried; the init loads those whose
	// aliases match a device present.
	NIC []string `json:"nic"`
}

// ManifestPath is where the manifest lives in the initrd.
const ManifestPath = "etc/bootd-initrd.json"

// Options says what to build from.
type Options struct {
	// Root is the image's root tree.
	Root string
	// KernelVersion picks a kernel when the image has several.
	KernelVersion string
	// Init is the static binary installed as /init (normally bootd itself).
	Init string
	// ExtraModules are loaded on every boot after BaseModules.
	ExtraModules []string
	// Compression is "zstd" (default when the kernel supports it) or "gzip".
	Compression string
}

// Result describes a built initrd.
type Result struct {
	KernelVersion string
	Kernel        string // the image's kernel file
	Modules       []string
	Missing       []string // asked for but not in the image (or built in)
	Compression   string
	Size          int64
	// Warnings are things worth telling the admin (e.g. an init binary
	// carrying debug information that doubles its size).
	Warnings []string
}

func openImage(root string) (*imageroot.Root, error) {
	r, err := imageroot.Open(root)
	if err != nil {
		return nil, fmt.Errorf("opening the image: %w", err)
	}
	return r, nil
}

// below says whether a name the image gives (a module's path in
// modules.dep, a firmware name in a module) stays below the directory it
// is relative to: not absolute, no "..".
func below(name string) bool {
	if name == "" || path.IsAbs(name) {
		return false
	}
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return false
		}
	}
	return true
}

// FindKernel returns the kernel version in an image and its vmlinuz: a
// path inside root with the image's symlinks resolved inside it.
func FindKernel(root, want string) (string, string, error) {
	img, err := openImage(root)
	if err != nil {
		return "", "", err
	}
	defer img.Close()
	ents, err := img.ReadDir("lib/modules")
	if err != nil {
		return "", "", fmt.Errorf("finding the image's kernel: %w (install linux-image-amd64 in the image)", err)
	}
	var kvers []string
	for _, e := range ents {
		if st, err := img.Stat(path.Join("lib/modules", e.Name())); err != nil || !st.IsDir() {
			continue
		}
		if st, err := img.Stat("boot/vmlinuz-" + e.Name()); err == nil && st.Mode().IsRegular() {
			kvers = append(kvers, e.Name())
		}
	}
	sort.Strings(kvers)
	var kver string
	switch {
	case want != "":
		for _, k := range kvers {
			if k == want {
				kver = k
			}
		}
		if kver == "" {
			return "", "", fmt.Errorf("the image has no kernel %s (it has: %s)", want, strings.Join(kvers, ", "))
		}
	case len(kvers) == 0:
		return "", "", errors.New("the image has no kernel: no /boot/vmlinuz-KVER beside /lib/modules/KVER (install linux-image-amd64 in the image)")
	case len(kvers) > 1:
		return "", "", fmt.Errorf("the image has several kernels (%s): name one", strings.Join(kvers, ", "))
	default:
		kver = kvers[0]
	}
	// Callers read the kernel by this path: it must have no symlink left
	// to follow on the master.
	vmlinuz, err := securejoin.SecureJoin(root, "boot/vmlinuz-"+kver)
	if err != nil {
		return "", "", fmt.Errorf("finding the image's kernel: %w", err)
	}
	return kver, vmlinuz, nil
}

// CheckStatic reports whether a binary can run as /init: a static ELF with
// no interpreter (bootd built with CGO_ENABLED=0).
func CheckStatic(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked and cannot be the initrd's init: build bootd with CGO_ENABLED=0", bin)
		}
	}
	return nil
}

// Build writes the compressed initrd to w.
func Build(w io.Writer, opt Options) (Result, error) {
	var res Result
	kver, vmlinuz, err := FindKernel(opt.Root, opt.KernelVersion)
	if err != nil {
		return res, err
	}
	res.KernelVersion, res.Kernel = kver, vmlinuz
	if err := CheckStatic(opt.Init); err != nil {
		return res, err
	}
	if ef, err := elf.Open(opt.Init); err == nil {
		if ef.Section(".debug_info") != nil || ef.Section(".zdebug_info") != nil {
			res.Warnings = append(res.Warnings, "the init binary carries debug information (about 2 MB more in every initrd): build bootd with -ldflags='-s -w'")
		}
		ef.Close()
	}
	initBin, err := os.ReadFile(opt.Init)
	if err != nil {
		return res, fmt.Errorf("reading the init: %w", err)
	}
	img, err := openImage(opt.Root)
	if err != nil {
		return res, err
	}
	defer img.Close()
	modDir := path.Join("lib/modules", kver)
	mods, err := readModules(func(name string) (io.ReadCloser, error) {
		f, err := img.Open(path.Join(modDir, name))
		if err != nil {
			return nil, err
		}
		return f, nil
	}, "/"+modDir)
	if err != nil {
		return res, err
	}
	load := append(append([]string(nil), BaseModules...), opt.ExtraModules...)
	paths, missing := mods.Closure(append(append(append([]string(nil), load...), NICModules...), OptionalModules...))
	for _, p := range paths {
		if !below(p) {
			return res, fmt.Errorf("the image's /%s/modules.dep names module %q: not a path under /%s", modDir, p, modDir)
		}
	}
	builtin := readBuiltin(img, modDir)
	for _, m := range missing {
		if !builtin[m] && !contains(NICModules, m) && !contains(OptionalModules, m) {
			res.Missing = append(res.Missing, m)
		}
	}
	if len(res.Missing) > 0 {
		return res, fmt.Errorf("modules not in the image's kernel %s: %s", kver, strings.Join(res.Missing, ", "))
	}
	var nics []string
	for _, n := range NICModules {
		if _, ok := mods.Path(n); ok {
			nics = append(nics, n)
		}
	}
	sort.Strings(paths)
	res.Modules = paths

	man := Manifest{Kernel: kver, Load: load, NIC: nics}
	manJSON, _ := json.MarshalIndent(man, "", "  ")
	// Modules go in decompressed: the kernel unpacks the whole initrd
	// natively, where the init would decompress each .ko.xz in Go (seconds
	// under emulation, and on every boot).
	sub := mods.Subset(paths).Uncompressed()
	var dep, alias, soft bytes.Buffer
	sub.WriteDep(&dep)
	sub.WriteAlias(&alias)
	sub.WriteSoftdep(&soft)

	lib := path.Join("lib/modules", kver)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.Directory("run", 0o755),
		cpio.Directory("newroot", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.StaticRecord(initBin, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}),
		cpio.StaticFile(ManifestPath, string(manJSON)+"\n", 0o644),
		cpio.StaticFile(path.Join(lib, "modules.dep"), dep.String(), 0o644),
		cpio.StaticFile(path.Join(lib, "modules.alias"), alias.String(), 0o644),
		cpio.StaticFile(path.Join(lib, "modules.softdep"), soft.String(), 0o644),
	}
	if b, err := img.ReadFile(path.Join(modDir, "modules.builtin")); err == nil {
		recs = append(recs, cpio.StaticFile(path.Join(lib, "modules.builtin"), string(b), 0o644))
	}
	fwSeen := map[string]bool{}
	for _, p := range paths {
		b, fws, err := readModule(img, path.Join(modDir, p))
		if err != nil {
			return res, fmt.Errorf("reading module %s: %w", p, err)
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: path.Join(lib, UncompressedName(p)), Mode: cpio.S_IFREG | 0o644}))
		// NICs such as bnx2x and tg3 need firmware files: carry those
		// the image has.
		for _, fw := range fws {
			if !below(fw) {
				return res, fmt.Errorf("module %s asks for firmware %q: not a name under /lib/firmware", p, fw)
			}
			fw = path.Clean(fw)
			if fwSeen[fw] {
				continue
			}
			fwSeen[fw] = true
			for _, dir := range []string{"lib/firmware", "usr/lib/firmware"} {
				if b, err := img.ReadFile(path.Join(dir, fw)); err == nil {
					recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: path.Join("lib/firmware", fw), Mode: cpio.S_IFREG | 0o644}))
					break
				}
			}
		}
	}

	comp := opt.Compression
	if comp == "" {
		comp = "zstd"
		if !kernelHas(img, kver, "CONFIG_RD_ZSTD=y") {
			comp = "gzip"
		}
	}
	res.Compression = comp
	cw := &countWriter{w: w}
	var zw io.WriteCloser
	switch comp {
	case "zstd":
		// "Better" is within 2% of the best level's size at a quarter of
		// its time. The kernel's decompressor wants a bounded window.
		zw, err = zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20), zstd.WithEncoderCRC(true))
	case "gzip":
		zw, err = gzip.NewWriterLevel(cw, gzip.BestCompression)
	default:
		return res, fmt.Errorf("compression %q: want zstd or gzip", comp)
	}
	if err != nil {
		return res, err
	}
	if err := writeArchive(zw, recs); err != nil {
		return res, err
	}
	if err := zw.Close(); err != nil {
		return res, err
	}
	res.Size = cw.n
	return res, nil
}

// writeArchive writes records as newc cpio, sorted, with parent
// directories, and stripped of everything that varies between builds.
func writeArchive(w io.Writer, recs []cpio.Record) error {
	byName := map[string]cpio.Record{}
	for _, r := range recs {
		r = cpio.MakeReproducible(r)
		byName[r.Name] = r
		// Parent directories first, as the kernel's unpacker needs them.
		for d := path.Dir(r.Name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = cpio.MakeReproducible(cpio.Directory(d, 0o755))
			}
		}
	}
	var names []string
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	rw := cpio.Newc.Writer(w)
	for i, n := range names {
		r := byName[n]
		r.Ino = uint64(i + 1)
		r.NLink = 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := rw.WriteRecord(r); err != nil {
			return fmt.Errorf("writing %s: %w", n, err)
		}
	}
	return cpio.WriteTrailer(rw)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func readBuiltin(img *imageroot.Root, modDir string) map[string]bool {
	b, _ := img.ReadFile(path.Join(modDir, "modules.builtin"))
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[ModuleName(l)] = true
		}
	}
	return out
}

func kernelHas(img *imageroot.Root, kver, line string) bool {
	b, err := img.ReadFile("boot/config-" + kver)
	if err != nil {
		return true // every Debian kernel since bookworm has zstd initramfs support
	}
	return bytes.Contains(b, []byte("\n"+line+"\n"))
}

// readModule returns a module of the image, decompressed (.ko.xz,
// .ko.zst), and the firmware files it asks for.
func readModule(img *imageroot.Root, name string) ([]byte, []string, error) {
	f, err := img.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r, err := kmodule.CompressionReader(f)
	if err != nil {
		return nil, nil, err
	}
	if r == nil {
		r = f
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, err
	}
	return b, moduleFirmware(b), nil
}

// moduleFirmware lists the firmware files a module asks for (its
// .modinfo "firmware=" entries).
func moduleFirmware(b []byte) []string {
	ef, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("firmware=")); ok && len(v) > 0 {
			out = append(out, string(v))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

package initrd

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Modules is a kernel's module index (depmod's modules.dep, modules.alias
// and modules.softdep): enough to choose modules by name or by the
// modalias of a device, and to close a set over its dependencies. The
// generator reads it from the image; the init reads the subset the
// generator wrote into the initrd.
type Modules struct {
	// Deps maps a module's path (relative to /lib/modules/KVER) to the
	// paths it needs loaded first.
	Deps map[string][]string
	// byName maps a module name (underscores) to its path.
	byName map[string]string
	// Aliases are modalias patterns (fnmatch) and the module each names.
	Aliases []Alias
	// Soft lists a module's soft dependencies ("pre:" modules).
	Soft map[string][]string
}

// Alias is one line of modules.alias.
type Alias struct {
	Pattern string
	Module  string
}

// ModuleName turns a module path into its name: kernel/fs/nfs/nfs.ko.xz
// is "nfs"; dashes become underscores, as the kernel names them.
func ModuleName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// ReadModules reads the index in dir (/lib/modules/KVER).
func ReadModules(dir string) (*Modules, error) {
	return readModules(func(name string) (io.ReadCloser, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		return f, nil
	}, dir)
}

// readModules reads an index through open (the generator opens an
// image's files inside the image), dir naming it in errors.
func readModules(open func(name string) (io.ReadCloser, error), dir string) (*Modules, error) {
	m := &Modules{Deps: map[string][]string{}, byName: map[string]string{}, Soft: map[string][]string{}}
	f, err := open("modules.dep")
	if err != nil {
		return nil, fmt.Errorf("reading the module index: %w (an unpacked kernel needs 'depmod -b ROOT KVER')", err)
	}
	defer f.Close()
	if err := m.parseDep(f); err != nil {
		return nil, fmt.Errorf("%s: %w", path.Join(dir, "modules.dep"), err)
	}
	if a, err := open("modules.alias"); err == nil {
		defer a.Close()
		m.parseAlias(a)
	}
	if s, err := open("modules.softdep"); err == nil {
		defer s.Close()
		m.parseSoftdep(s)
	}
	return m, nil
}

func (m *Modules) parseDep(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			if strings.TrimSpace(line) == "" {
				continue
			}
			return fmt.Errorf("bad line %q", line)
		}
		m.Deps[mod] = strings.Fields(deps)
		m.byName[ModuleName(mod)] = mod
	}
	return sc.Err()
}

func (m *Modules) parseAlias(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "alias" {
			m.Aliases = append(m.Aliases, Alias{Pattern: f[1], Module: strings.ReplaceAll(f[2], "-", "_")})
		}
	}
}

func (m *Modules) parseSoftdep(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		name := strings.ReplaceAll(f[1], "-", "_")
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					m.Soft[name] = append(m.Soft[name], strings.ReplaceAll(w, "-", "_"))
				}
			}
		}
	}
}

// Path returns the path of the module with this name.
func (m *Modules) Path(name string) (string, bool) {
	p, ok := m.byName[strings.ReplaceAll(name, "-", "_")]
	return p, ok
}

// Match returns the modules whose alias patterns match a device's
// modalias (from /sys/bus/*/devices/*/modalias), sorted.
func (m *Modules) Match(modalias string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range m.Aliases {
		if seen[a.Module] {
			continue
		}
		if ok, _ := path.Match(a.Pattern, modalias); ok {
			if _, known := m.byName[a.Module]; known {
				seen[a.Module] = true
				out = append(out, a.Module)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Closure returns the paths of the named modules and everything they
// depend on (hard and soft "pre" dependencies), in an order that loads
// every dependency before the modules that need it. Names not found are
// returned in missing (they may be built into the kernel).
func (m *Modules) Closure(names []string) (paths []string, missing []string) {
	done := map[string]bool{}
	var visit func(p string)
	visit = func(p string) {
		if done[p] {
			return
		}
		done[p] = true
		for _, s := range m.Soft[ModuleName(p)] {
			if sp, ok := m.byName[s]; ok {
				visit(sp)
			}
		}
		// modules.dep lists a module's dependencies with the ones it
		// needs directly first; load from the far end.
		deps := m.Deps[p]
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i])
		}
		paths = append(paths, p)
	}
	for _, n := range names {
		p, ok := m.Path(n)
		if !ok {
			missing = append(missing, n)
			continue
		}
		visit(p)
	}
	return paths, missing
}

// Subset returns the index restricted to the given module paths, so that
// the initrd carries an index of exactly what it carries.
func (m *Modules) Subset(paths []string) *Modules {
	keep := map[string]bool{}
	for _, p := range paths {
		keep[p] = true
	}
	s := &Modules{Deps: map[string][]string{}, byName: map[string]string{}, Soft: map[string][]string{}}
	for p, d := range m.Deps {
		if keep[p] {
			s.Deps[p] = d
			s.byName[ModuleName(p)] = p
		}
	}
	for _, a := range m.Aliases {
		if _, ok := s.byName[a.Module]; ok {
			s.Aliases = append(s.Aliases, a)
		}
	}
	for k, v := range m.Soft {
		if _, ok := s.byName[k]; ok {
			s.Soft[k] = v
		}
	}
	return s
}

// Uncompressed returns the index with every module path named as its
// decompressed file (kernel/fs/nfs/nfs.ko.xz becomes .../nfs.ko): the
// generator carries modules decompressed.
func (m *Modules) Uncompressed() *Modules {
	s := &Modules{Deps: map[string][]string{}, byName: map[string]string{}, Aliases: m.Aliases, Soft: m.Soft}
	for p, d := range m.Deps {
		nd := make([]string, len(d))
		for i, x := range d {
			nd[i] = UncompressedName(x)
		}
		s.Deps[UncompressedName(p)] = nd
	}
	for n, p := range m.byName {
		s.byName[n] = UncompressedName(p)
	}
	return s
}

// UncompressedName is a module path without its compression suffix.
func UncompressedName(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if q, ok := strings.CutSuffix(p, ".ko"+ext); ok {
			return q + ".ko"
		}
	}
	return p
}

// WriteDep writes modules.dep for the index, sorted.
func (m *Modules) WriteDep(w io.Writer) {
	var ps []string
	for p := range m.Deps {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	for _, p := range ps {
		if len(m.Deps[p]) == 0 {
			fmt.Fprintf(w, "%s:\n", p)
		} else {
			fmt.Fprintf(w, "%s: %s\n", p, strings.Join(m.Deps[p], " "))
		}
	}
}

// WriteAlias writes modules.alias for the index, in its original order.
func (m *Modules) WriteAlias(w io.Writer) {
	for _, a := range m.Aliases {
		fmt.Fprintf(w, "alias %s %s\n", a.Pattern, a.Module)
	}
}

// WriteSoftdep writes modules.softdep for the index, sorted.
func (m *Modules) WriteSoftdep(w io.Writer) {
	var ks []string
	for k := range m.Soft {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		fmt.Fprintf(w, "softdep %s pre: %s\n", k, strings.Join(m.Soft[k], " "))
	}
}

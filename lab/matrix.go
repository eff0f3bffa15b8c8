package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// The boot matrix: every path a node can take to a login prompt, one
// node each. A cell is a firmware, the site's DHCP server and an image.
// Cells of one site DHCP server share a lab (its namespaces, its server,
// one bootd); the labs run side by side, each in its own namespaces, and
// share the images, built once.

// Images are the images the matrix boots, named after their suites.
var Images = []string{"bookworm", "trixie"}

// Cell is one path of the matrix.
type Cell struct {
	Firmware Firmware `json:"firmware"`
	Site     SiteDHCP `json:"site_dhcp"`
	Image    string   `json:"image"`
}

func (c Cell) String() string { return fmt.Sprintf("%s/%s/%s", c.Firmware, c.Site, c.Image) }

// AllCells are the matrix's 24 cells, firmware first.
func AllCells() []Cell {
	var cells []Cell
	for _, fw := range Firmwares {
		for _, site := range SiteDHCPs {
			for _, image := range Images {
				cells = append(cells, Cell{fw, site, image})
			}
		}
	}
	return cells
}

// FilterCells keeps the cells that match only: values of any axis
// (e.g. "uefi-native,bookworm"); on each axis that only names, the cell's
// value must be one of those named. An empty only keeps every cell.
func FilterCells(cells []Cell, only []string) ([]Cell, error) {
	var fws, sites, images []string
	for _, v := range only {
		switch {
		case slices.Contains(Firmwares, Firmware(v)):
			fws = append(fws, v)
		case slices.Contains(SiteDHCPs, SiteDHCP(v)):
			sites = append(sites, v)
		case slices.Contains(Images, v):
			images = append(images, v)
		default:
			return nil, fmt.Errorf("--only %q: not a firmware (bios, uefi, uefi-native), site DHCP (dnsmasq, isc, kea, none) or image (bookworm, trixie)", v)
		}
	}
	in := func(set []string, v string) bool { return len(set) == 0 || slices.Contains(set, v) }
	var kept []Cell
	for _, c := range cells {
		if in(fws, string(c.Firmware)) && in(sites, string(c.Site)) && in(images, c.Image) {
			kept = append(kept, c)
		}
	}
	return kept, nil
}

// Rotation returns rotation n of the matrix: 4 cells that, between them,
// take every value of every axis (the largest axis, site DHCP, has 4).
// Successive n pair the values differently; 24 successive rotations run
// every cell.
func Rotation(n int) []Cell {
	n = ((n % 24) + 24) % 24
	var cells []Cell
	for k := range len(SiteDHCPs) {
		cells = append(cells, Cell{
			Site: SiteDHCPs[(k+n)%len(SiteDHCPs)],
			// 4 consecutive k cover the 3 firmwares and the 2 images; the
			// offsets n/4 and n/12 change which site each is paired with.
			Firmware: Firmwares[(k+n/4)%len(Firmwares)],
			Image:    Images[(k+n/12)%len(Images)],
		})
	}
	return cells
}

// CellResult is how a cell's node booted.
type CellResult struct {
	Cell
	// Result is "login", "failed at STAGE" (the first stage of bootd's
	// record not reached: dhcp, loader, config, kernel, initrd, root, up,
	// login), "not run" (out of time budget) or "error: ..." (the lab did not
	// start).
	Result string `json:"result"`
	// Login is power-on to "login:" on the node's serial console; Up is
	// power-on to the node's record reaching up in bootd's API (multi-user
	// reached, by bootd-report.service). Zero: not reached.
	Login time.Duration `json:"login_ns,omitempty"`
	Up    time.Duration `json:"up_ns,omitempty"`
	// Path is how the kernel came: http or tftp.
	Path string `json:"path,omitempty"`
	Node string `json:"node,omitempty"`
	// Stages are the record's stages, as seconds after power-on.
	Stages map[string]float64 `json:"stages,omitempty"`
	// Console is the node's serial console log, kept after the run.
	Console string `json:"console,omitempty"`
}

// OK says whether the node logged in.
func (r CellResult) OK() bool { return r.Result == "login" }

// MatrixOptions configure a matrix run.
type MatrixOptions struct {
	Dir   string // the images (Dir/state, as `bootd lab up`'s) and each lab under Dir/matrix/SITE
	Bootd string
	Out   io.Writer // progress
	Cells []Cell    // default AllCells
	// Budget: no cell starts after this long (default 60m); cells
	// already running finish.
	Budget time.Duration
	// Parallel is how many nodes boot at once (default 2: on 2 CPUs, two
	// TCG nodes at once is about the limit).
	Parallel int
	// Timeout is one node's power-on to login (default 6m).
	Timeout time.Duration
	// Name prefixes the labs' namespaces (default "bdmx").
	Name string
}

func (o *MatrixOptions) defaults() {
	if len(o.Cells) == 0 {
		o.Cells = AllCells()
	}
	if o.Budget == 0 {
		o.Budget = 60 * time.Minute
	}
	if o.Parallel < 1 {
		o.Parallel = 2
	}
	if o.Timeout == 0 {
		o.Timeout = 6 * time.Minute
	}
	if o.Name == "" {
		o.Name = "bdmx"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// running is a cell's node being followed.
type running struct {
	i     int // index in the results
	c     *Cluster
	r     *NodeReport
	login time.Duration
}

// matrixRun is one run of the matrix: a result per cell, the labs still
// running, and how many of each lab's cells are still to finish.
type matrixRun struct {
	o    MatrixOptions
	res  []CellResult
	labs map[SiteDHCP]*Cluster
	left map[SiteDHCP]int
}

// Matrix runs the cells, Parallel nodes at a time, and returns a result
// for every cell, in the order of Cells. Its error is a lab that could not
// be prepared; a cell that fails is in its result.
func Matrix(ctx context.Context, o MatrixOptions) ([]CellResult, error) {
	o.defaults()
	start := time.Now()
	if err := Check(); err != nil {
		return nil, err
	}
	m := &matrixRun{o: o, res: make([]CellResult, len(o.Cells)), labs: map[SiteDHCP]*Cluster{}, left: map[SiteDHCP]int{}}
	suites, err := m.check()
	if err != nil {
		return nil, err
	}
	// The images, built once (or, built before, their initrds rebuilt with
	// this bootd) in Dir/state, which every lab's state links to.
	if _, err := Prepare(ctx, Options{Dir: o.Dir, Suite: strings.Join(suites, ","), Nodes: len(suites), Bootd: o.Bootd, Out: o.Out}); err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range m.labs {
			c.Down()
		}
	}()
	m.startLabs(ctx)
	m.boot(ctx, start)
	return m.res, ctx.Err()
}

// check checks the cells and returns the suites they boot.
func (m *matrixRun) check() ([]string, error) {
	var suites []string
	for i, c := range m.o.Cells {
		m.res[i] = CellResult{Cell: c, Result: "not run", Node: fmt.Sprintf("%s-%s", c.Firmware, c.Image)}
		if !slices.Contains(Images, c.Image) || !slices.Contains(Firmwares, c.Firmware) {
			return nil, fmt.Errorf("cell %s: unknown image or firmware", c)
		}
		if err := c.Site.check(); err != nil {
			return nil, err
		}
		if !slices.Contains(suites, c.Image) {
			suites = append(suites, c.Image)
		}
	}
	slices.Sort(suites)
	return suites, nil
}

// startLabs starts a lab for each site DHCP server some cell has, its
// node table every such cell's node. A lab that does not start fails its
// cells.
func (m *matrixRun) startLabs(ctx context.Context) {
	images := filepath.Join(m.o.Dir, "state", "images")
	for si, site := range SiteDHCPs {
		lo := Options{Dir: filepath.Join(m.o.Dir, "matrix", string(site)), Name: m.o.Name + "-" + string(site),
			SiteDHCP: site, Bootd: m.o.Bootd, Out: m.o.Out, Timeout: m.o.Timeout}
		var idx []int
		for i, c := range m.o.Cells {
			if c.Site != site {
				continue
			}
			idx = append(idx, i)
			nic := "virtio-net-pci"
			if c.Firmware == BIOS {
				nic = "e1000"
			}
			// The same cell has the same MAC in every run.
			k := slices.Index(AllCells(), c)
			lo.Specs = append(lo.Specs, NodeSpec{Name: m.res[i].Node, MAC: fmt.Sprintf("52:54:00:bd:%02x:%02x", 0x10+si, k),
				Firmware: c.Firmware, NIC: nic, MemoryMB: 1024, Image: c.Image})
			lo.Suite = c.Image
		}
		if len(idx) == 0 {
			continue
		}
		c, err := startMatrixLab(ctx, lo, images)
		if err != nil {
			for _, i := range idx {
				m.res[i].Result = "error: " + err.Error()
			}
			continue
		}
		m.labs[site], m.left[site] = c, len(idx)
	}
}

// boot powers the cells' nodes on, Parallel at a time, until every one
// is over or the budget is spent, and fills in their results.
func (m *matrixRun) boot(ctx context.Context, start time.Time) {
	var queue []int
	for i, c := range m.o.Cells {
		if m.labs[c.Site] != nil {
			queue = append(queue, i)
		}
	}
	var run []*running
	for (len(queue) > 0 || len(run) > 0) && ctx.Err() == nil {
		for len(run) < m.o.Parallel && len(queue) > 0 && time.Since(start) < m.o.Budget {
			i := queue[0]
			queue = queue[1:]
			if x := m.powerOn(i); x != nil {
				run = append(run, x)
			}
		}
		if len(run) == 0 {
			return // the rest is over budget
		}
		time.Sleep(500 * time.Millisecond)
		run = slices.DeleteFunc(run, func(x *running) bool {
			if !x.follow(ctx, m.o.Timeout) {
				return false
			}
			m.finish(x)
			return true
		})
	}
}

// powerOn powers cell i's node on.
func (m *matrixRun) powerOn(i int) *running {
	c := m.labs[m.o.Cells[i].Site]
	spec := c.Opt.Specs[slices.IndexFunc(c.Opt.Specs, func(s NodeSpec) bool { return s.Name == m.res[i].Node })]
	r, err := c.PowerOn(spec)
	if err != nil {
		m.res[i].Result = "error: " + err.Error()
		return nil
	}
	fmt.Fprintf(m.o.Out, "matrix: %s: powered on %s\n", m.o.Cells[i], spec.Name)
	return &running{i: i, c: c, r: r}
}

// finish records a cell that is over, powers its node off and takes its
// lab down after the lab's last cell.
func (m *matrixRun) finish(x *running) {
	m.res[x.i] = x.result(m.res[x.i])
	fmt.Fprintf(m.o.Out, "matrix: %s: %s%s\n", m.o.Cells[x.i], m.res[x.i].Result, seconds(" in ", m.res[x.i].Login))
	// Its CPU to the next cell; the console log stays.
	if err := x.c.Stop(x.r.Name, syscall.SIGKILL); err != nil {
		fmt.Fprintf(m.o.Out, "matrix: powering off %s: %v\n", x.r.Name, err)
	}
	site := m.o.Cells[x.i].Site
	if m.left[site]--; m.left[site] == 0 {
		x.c.Down()
		delete(m.labs, site)
	}
}

// RunMatrix is `bootd lab matrix`: the cells of rotation (every cell if
// negative) with the values in only (see FilterCells), run, their table
// written to w in format; an error names every cell that failed.
func RunMatrix(ctx context.Context, o MatrixOptions, rotation int, only []string, format string, w io.Writer) error {
	if err := WriteMatrix(io.Discard, nil, format); err != nil {
		return err // before the run, not after it
	}
	cells := AllCells()
	if rotation >= 0 {
		cells = Rotation(rotation)
	}
	cells, err := FilterCells(cells, only)
	if err != nil {
		return err
	}
	if len(cells) == 0 {
		return errors.New("no cell has those values")
	}
	o.Cells = cells
	res, err := Matrix(ctx, o)
	if res != nil {
		if werr := WriteMatrix(w, res, format); werr != nil {
			return werr
		}
	}
	if err != nil {
		return err
	}
	var failed []string
	for _, r := range res {
		if !r.OK() && r.Result != "not run" {
			failed = append(failed, fmt.Sprintf("%s %s (console: %s)", r.Cell, r.Result, r.Console))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("cells failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// startMatrixLab starts one site DHCP server's lab, its state's images
// those in images.
func startMatrixLab(ctx context.Context, o Options, images string) (*Cluster, error) {
	o.defaults()
	// What a killed run of this lab left goes first.
	if l, err := Load(filepath.Join(o.Dir, "lab")); err == nil && len(l.Procs) > 0 {
		l.Out = o.Out
		l.Down()
	}
	// A fresh state: node records, leases and logs of an earlier run would
	// be taken for this one's (an address leased again to another cell's
	// node is still the old node's in bootd's records).
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, fmt.Errorf("clearing the last run's lab: %w", err)
	}
	state := o.stateDir(1)
	if err := os.MkdirAll(state, 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(images, filepath.Join(state, "images")); err != nil {
		return nil, fmt.Errorf("linking the images into %s: %w", state, err)
	}
	if err := o.writeConfigs(); err != nil {
		return nil, err
	}
	return StartCluster(ctx, o)
}

// follow updates a running cell; true when it is over: the console showed
// "login:" (and the record reached up, or had 30 s to), or it timed out.
func (x *running) follow(ctx context.Context, timeout time.Duration) bool {
	x.c.observeNode(ctx, x.r)
	since := time.Since(x.r.Start)
	if x.login == 0 {
		if b, _ := os.ReadFile(x.r.Console); strings.Contains(string(b), "login:") {
			x.login = since
		}
	}
	_, up := x.r.At["up"]
	_, lost := x.r.At["lost"]
	switch {
	case x.login > 0:
		return up || since > x.login+30*time.Second
	case lost:
		return true
	}
	return since > timeout
}

// result fills in a finished cell's result.
func (x *running) result(res CellResult) CellResult {
	res.Login, res.Path, res.Console = x.login, x.r.Path, x.r.Console
	res.Up = x.r.At["up"]
	res.Stages = map[string]float64{}
	for s, d := range x.r.At {
		res.Stages[s] = d.Seconds()
	}
	if x.login > 0 {
		res.Result = "login"
		return res
	}
	res.Result = "failed at login"
	for _, s := range Stages {
		// Firmware that is iPXE fetches no loader: the iPXE script is its
		// config. UEFI's own PXE fetches snponly.efi.
		if _, ok := x.r.At[s]; !ok && !(s == "loader" && res.Firmware != UEFINative) {
			res.Result = "failed at " + s
			break
		}
	}
	if b, err := os.ReadFile(x.r.Console); err == nil {
		res.Result += panicked(string(b))
	}
	return res
}

// panicked names a kernel panic on a console: what a failed cell's
// result should say.
func panicked(console string) string {
	_, after, ok := strings.Cut(console, "Kernel panic - not syncing: ")
	if !ok {
		return ""
	}
	line, _, _ := strings.Cut(after, "\n")
	return " (kernel panic: " + strings.TrimSpace(line) + ")"
}

func seconds(prefix string, d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("%s%.1fs", prefix, d.Seconds())
}

// firmwareName is a firmware as the table names it.
func firmwareName(fw Firmware) string {
	return map[Firmware]string{BIOS: "BIOS + iPXE ROM", UEFI: "UEFI + iPXE ROM", UEFINative: "UEFI native PXE"}[fw]
}

// siteName is a site DHCP server as the table names it.
func siteName(s SiteDHCP) string {
	return map[SiteDHCP]string{SiteDnsmasq: "dnsmasq", SiteISC: "ISC dhcpd", SiteKea: "Kea", SiteNone: "none (bootd full)"}[s]
}

// imageName is an image as the table names it.
func imageName(image string) string {
	return map[string]string{"bookworm": "Debian 12", "trixie": "Debian 13"}[image]
}

// WriteMatrix writes results as format: "text" (a table), "markdown" or
// "json".
func WriteMatrix(w io.Writer, res []CellResult, format string) error {
	switch format {
	case "json":
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(res)
	case "markdown":
		fmt.Fprintln(w, "| firmware | site DHCP | image | result | login | up | path |")
		fmt.Fprintln(w, "|---|---|---|---|---:|---:|---|")
		for _, r := range res {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", firmwareName(r.Firmware), siteName(r.Site), imageName(r.Image),
				r.Result, dash(seconds("", r.Login)), dash(seconds("", r.Up)), dash(r.Path))
		}
		return nil
	case "text", "":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FIRMWARE\tSITE DHCP\tIMAGE\tRESULT\tLOGIN\tUP\tPATH")
		for _, r := range res {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", firmwareName(r.Firmware), siteName(r.Site), imageName(r.Image),
				r.Result, dash(seconds("", r.Login)), dash(seconds("", r.Up)), dash(r.Path))
		}
		return tw.Flush()
	}
	return fmt.Errorf("format %q: want text, markdown or json", format)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

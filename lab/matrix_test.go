package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every rotation takes every value of every axis; 24 successive rotations
// take every cell.
func TestRotationCoversEveryValue(t *testing.T) {
	seen := map[Cell]bool{}
	for n := 100; n < 124; n++ {
		cells := Rotation(n)
		fws, sites, images := map[Firmware]bool{}, map[SiteDHCP]bool{}, map[string]bool{}
		for _, c := range cells {
			fws[c.Firmware], sites[c.Site], images[c.Image] = true, true, true
			seen[c] = true
		}
		if len(cells) != 4 || len(fws) != len(Firmwares) || len(sites) != len(SiteDHCPs) || len(images) != len(Images) {
			t.Errorf("rotation %d: %v misses a value", n, cells)
		}
	}
	for _, c := range AllCells() {
		if !seen[c] {
			t.Errorf("24 rotations never run %s", c)
		}
	}
	if len(AllCells()) != 24 {
		t.Errorf("%d cells, want 3 firmwares x 4 site DHCP servers x 2 images", len(AllCells()))
	}
}

func TestFilterCells(t *testing.T) {
	got, err := FilterCells(AllCells(), []string{"uefi-native", "kea", "none", "bookworm"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Cell{{UEFINative, SiteKea, "bookworm"}, {UEFINative, SiteNone, "bookworm"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := FilterCells(AllCells(), []string{"uefi-nativ"}); err == nil {
		t.Error("an unknown value was accepted")
	}
}

func TestWriteMatrix(t *testing.T) {
	res := []CellResult{
		{Cell: Cell{BIOS, SiteISC, "trixie"}, Result: "login", Login: 61200 * time.Millisecond, Up: 64 * time.Second, Path: "http"},
		{Cell: Cell{UEFINative, SiteNone, "bookworm"}, Result: "failed at root", Path: "tftp"},
	}
	var md bytes.Buffer
	if err := WriteMatrix(&md, res, "markdown"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| BIOS + iPXE ROM | ISC dhcpd | Debian 13 | login | 61.2s | 64.0s | http |",
		"| UEFI native PXE | none (bootd full) | Debian 12 | failed at root | - | - | tftp |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := WriteMatrix(&js, res, "json"); err != nil {
		t.Fatal(err)
	}
	var back []CellResult
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back) != 2 || back[0].Login != res[0].Login || back[1].Site != SiteNone {
		t.Errorf("json round trip: %v %+v", err, back)
	}
	if err := WriteMatrix(&js, res, "yaml"); err == nil {
		t.Error("an unknown format was accepted")
	}
}

// ISC dhcpd accepts the site's dhcpd.conf.
func TestSiteDHCPConfigs(t *testing.T) {
	dir := t.TempDir()
	if _, err := exec.LookPath("dhcpd"); err == nil {
		conf := dir + "/dhcpd.conf"
		os.WriteFile(conf, []byte(dhcpdConfig()), 0o644)
		if out, err := exec.Command("dhcpd", "-t", "-cf", conf).CombinedOutput(); err != nil {
			t.Errorf("dhcpd -t: %v\n%s", err, out)
		}
	} else if !testing.Short() {
		t.Error("dhcpd missing: apt-get install isc-dhcp-server")
	}
	// kea-dhcp4 -t wants the interface to exist: Kea's config is tested
	// by the matrix's Kea cells.
}

// matrixDir is where the matrix test keeps its labs and images, between
// runs: /var/cache/bootd-lab/matrix-KEY, KEY a hash of the code that builds
// and prepares images (packages image and imageroot) and go.sum. Images
// built by the same code are reused (about two minutes saved; Prepare
// rebuilds their initrds with this bootd); other keys' directories go.
func matrixDir(t *testing.T) string {
	t.Helper()
	files, _ := filepath.Glob("../image/*.go")
	more, _ := filepath.Glob("../imageroot/*.go")
	h := sha256.New()
	for _, f := range append(append(files, more...), "../go.sum") {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	base := "/var/cache/bootd-lab"
	dir := filepath.Join(base, fmt.Sprintf("matrix-%x", h.Sum(nil)[:6]))
	old, _ := filepath.Glob(filepath.Join(base, "matrix-*"))
	for _, d := range old {
		if d != dir {
			os.RemoveAll(d)
		}
	}
	cache := filepath.Join(base, "debs")
	os.MkdirAll(cache, 0o755)
	os.MkdirAll(filepath.Join(dir, "state", "cache"), 0o755)
	os.Symlink(cache, filepath.Join(dir, "state", "cache", "debs"))
	return dir
}

// TestMatrixRotation boots a rotating part of the boot matrix: the 4 cells
// of today's rotation (days since 1970, UTC), which take every firmware,
// every site DHCP server and both images; 24 successive days run every
// cell. BOOTD_MATRIX_ROTATION=N runs rotation N instead.
func TestMatrixRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two Debian images and boots QEMU nodes: not in -short")
	}
	n := int(time.Now().UTC().Unix() / 86400)
	if s := os.Getenv("BOOTD_MATRIX_ROTATION"); s != "" {
		if _, err := fmt.Sscan(s, &n); err != nil {
			t.Fatalf("BOOTD_MATRIX_ROTATION=%q: %v", s, err)
		}
	}
	cells := Rotation(n)
	t.Logf("rotation %d: %v", n, cells)
	bootd := labBootd(t)
	res, err := Matrix(context.Background(), MatrixOptions{Dir: matrixDir(t), Bootd: bootd, Out: tWriter{t}, Cells: cells,
		Name: fmt.Sprintf("bdm%d", os.Getpid()%100000), Timeout: 6 * time.Minute})
	var table strings.Builder
	WriteMatrix(&table, res, "text")
	t.Logf("\n%s", table.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.OK() {
			con, _ := os.ReadFile(r.Console)
			t.Errorf("%s: %s\nconsole tail:\n%s", r.Cell, r.Result, tail(string(con), 3000))
		}
	}
}

package oci

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type tent struct {
	name, link string
	typ        byte
	body       string
}

func tarOf(t testing.TB, ents ...tent) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return b.Bytes()
}

// A layer from a registry may be hostile: no entry may write outside the
// directory it is unpacked into, through a name, a symlink or a hard link,
// and nothing is overwritten.
func TestExtractRefusesEscapes(t *testing.T) {
	for name, ents := range map[string][]tent{
		"dot-dot":         {{name: "root/", typ: tar.TypeDir}, {name: "root/../../escaped", typ: tar.TypeReg, body: "x"}},
		"absolute":        {{name: "/root/escaped", typ: tar.TypeReg, body: "x"}},
		"outside top":     {{name: "etc/", typ: tar.TypeDir}},
		"through symlink": {{name: "root/", typ: tar.TypeDir}, {name: "root/x", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "root/x/escaped", typ: tar.TypeReg, body: "x"}},
		"symlink parent":  {{name: "root/", typ: tar.TypeDir}, {name: "root/x", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "root/x/", typ: tar.TypeDir}},
		"hard link out":   {{name: "root/", typ: tar.TypeDir}, {name: "root/h", typ: tar.TypeLink, link: "../victim"}},
		"hard link abs":   {{name: "root/", typ: tar.TypeDir}, {name: "root/h", typ: tar.TypeLink, link: "VICTIM"}},
		"overwrite":       {{name: "root/", typ: tar.TypeDir}, {name: "root/f", typ: tar.TypeReg, body: "a"}, {name: "root/f", typ: tar.TypeReg, body: "b"}},
		"over symlink":    {{name: "root/", typ: tar.TypeDir}, {name: "root/f", typ: tar.TypeSymlink, link: "VICTIM"}, {name: "root/f", typ: tar.TypeReg, body: "b"}},
		"root a file":     {{name: "root", typ: tar.TypeReg, body: "a"}},
	} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			victim := filepath.Join(base, "victim")
			os.Mkdir(outside, 0o755)
			os.WriteFile(victim, []byte("keep"), 0o644)
			dir := filepath.Join(base, "gen")
			os.Mkdir(dir, 0o755)
			for i := range ents {
				ents[i].link = strings.NewReplacer("OUTSIDE", outside, "VICTIM", victim).Replace(ents[i].link)
			}
			x, err := newExtractor(dir, rootDir, bootDir)
			if err != nil {
				t.Fatal(err)
			}
			defer x.close()
			err = x.extract(bytes.NewReader(tarOf(t, ents...)))
			if err == nil {
				t.Error("extracted without an error")
			}
			if got, _ := os.ReadFile(victim); string(got) != "keep" {
				t.Errorf("victim now %q", got)
			}
			if es, _ := os.ReadDir(outside); len(es) > 0 {
				t.Errorf("wrote into a directory outside: %v", es)
			}
			if _, err := os.Lstat(filepath.Join(base, "escaped")); err == nil {
				t.Error("wrote beside the directory")
			}
		})
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(tarOf(f, tent{name: "root/", typ: tar.TypeDir}, tent{name: "root/a", typ: tar.TypeReg, body: "x"}))
	f.Add(tarOf(f, tent{name: "root/", typ: tar.TypeDir}, tent{name: "root/x", typ: tar.TypeSymlink, link: "/"}, tent{name: "root/x/y", typ: tar.TypeReg, body: "x"}))
	f.Add(tarOf(f, tent{name: "root/", typ: tar.TypeDir}, tent{name: "root/h", typ: tar.TypeLink, link: "../../etc/passwd"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "gen")
		os.Mkdir(dir, 0o755)
		x, err := newExtractor(dir, rootDir, bootDir)
		if err != nil {
			t.Fatal(err)
		}
		defer x.close()
		x.extract(bytes.NewReader(data))
		x.finish()
		es, _ := os.ReadDir(base)
		if len(es) != 1 {
			t.Fatalf("something beside the directory: %v", es)
		}
	})
}

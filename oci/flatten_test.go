package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func layerOf(t *testing.T, ents ...tent) v1.Layer {
	b := tarOf(t, ents...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func listTree(t *testing.T, root string) string {
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		s := rel
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s += "=" + string(b)
		}
		out = append(out, s)
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

// Any container image becomes a root tree as a container runtime would
// make it: layers in order, whiteouts and opaque directories applied,
// directories a layer only implies made. From a registry, a docker save
// archive and an OCI layout alike.
func TestFlatten(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image,
		layerOf(t, tent{name: "usr/bin/a", typ: tar.TypeReg, body: "a1"}, tent{name: "etc/", typ: tar.TypeDir},
			tent{name: "etc/gone", typ: tar.TypeReg, body: "x"}, tent{name: "etc/d/old", typ: tar.TypeReg, body: "o"}),
		layerOf(t, tent{name: "etc/.wh.gone", typ: tar.TypeReg}, tent{name: "etc/d/.wh..wh..opq", typ: tar.TypeReg},
			tent{name: "etc/d/new", typ: tar.TypeReg, body: "n"}, tent{name: "usr/bin/b", typ: tar.TypeSymlink, link: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	want := ". etc etc/d etc/d/new=n usr usr/bin usr/bin/a=a1 usr/bin/b"
	dir := t.TempDir()
	archive := filepath.Join(dir, "image.tar")
	ref, _ := name.ParseReference("example.org/debian:12")
	if err := tarball.WriteToFile(archive, ref, img); err != nil {
		t.Fatal(err)
	}
	oci := filepath.Join(dir, "layout")
	p, err := layout.Write(oci, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	srcs := []string{archive, oci}
	if os.Geteuid() == 0 {
		reg := startRegistry(t)
		r, _ := name.ParseReference(reg + "/debian:12")
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, reg+"/debian:12")
	}
	for i, src := range srcs {
		root := filepath.Join(dir, "root"+string(rune('0'+i)))
		os.Mkdir(root, 0o755)
		if err := Flatten(context.Background(), src, root, Options{}); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := listTree(t, root); got != want {
			t.Errorf("%s flattened to %s, want %s", src, got, want)
		}
	}
	if err := Flatten(context.Background(), filepath.Join(dir, "nothing"), filepath.Join(dir, "root0"), Options{}); err == nil {
		t.Error("flattened a file that does not exist")
	}
}

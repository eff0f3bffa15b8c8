package oci

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Remote is a generation found in a registry, not yet fetched.
type Remote struct {
	Ref         string
	Digest      string // the manifest's
	Name        string
	Gen         int
	Fingerprint string
	BootSums    string // BootSums of the pushed generation
	Meta        []byte // image.json
	Bytes       int64  // compressed layers
	img         v1.Image
	downloaded  atomic.Int64
}

// Fetch reads a generation's manifest and config from a registry.
func Fetch(ctx context.Context, ref string, opt Options) (*Remote, error) {
	r, err := name.ParseReference(ref, opt.nameOpts()...)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	img, err := remote.Image(r, opt.remoteOpts(ctx, nil, nil)...)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", r, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading %s's config: %w", r, err)
	}
	l := cfg.Config.Labels
	gen, err := strconv.Atoi(l[LabelGeneration])
	if l[LabelImage] == "" || err != nil || gen <= 0 || l[LabelFingerprint] == "" {
		return nil, fmt.Errorf("%s is not a generation pushed by bootd (labels %s, %s, %s missing): for any other image, use bootd image import", r, LabelImage, LabelGeneration, LabelFingerprint)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	rm := &Remote{Ref: r.String(), Digest: d.String(), Name: l[LabelImage], Gen: gen, Fingerprint: l[LabelFingerprint], BootSums: l[LabelBoot], Meta: []byte(l[LabelMeta]), img: img}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	for _, ld := range m.Layers {
		rm.Bytes += ld.Size
	}
	return rm, nil
}

// Downloaded is the number of compressed bytes read so far.
func (r *Remote) Downloaded() int64 { return r.downloaded.Load() }

// Unpack writes the generation into dir (an empty directory): root/,
// boot/ and image.json. Every layer's digest and diff ID is checked as it
// is read; an error leaves dir half written, for the caller to remove.
func (r *Remote) Unpack(ctx context.Context, dir string, opt Options) error {
	layers, err := r.img.Layers()
	if err != nil {
		return err
	}
	x, err := newExtractor(dir, rootDir, bootDir)
	if err != nil {
		return err
	}
	defer x.close()
	start := time.Now()
	for i, l := range layers {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.unpackLayer(x, l); err != nil {
			d, _ := l.Digest()
			return fmt.Errorf("layer %d of %d (%s): %w", i+1, len(layers), d, err)
		}
		if opt.Progress != nil && (i+1)%50 == 0 {
			opt.say("%d of %d layers, %d of %d MiB", i+1, len(layers), r.Downloaded()>>20, r.Bytes>>20)
		}
	}
	if err := x.finish(); err != nil {
		return err
	}
	if len(r.Meta) > 0 {
		if err := os.WriteFile(filepath.Join(dir, "image.json"), r.Meta, 0o644); err != nil {
			return err
		}
	}
	opt.say("unpacked %d layers, %d MiB, in %v", len(layers), r.Downloaded()>>20, time.Since(start).Round(time.Millisecond))
	return nil
}

func (r *Remote) unpackLayer(x *extractor, l v1.Layer) error {
	mt, err := l.MediaType()
	if err != nil {
		return err
	}
	if !strings.HasSuffix(string(mt), "tar+gzip") && !strings.HasSuffix(string(mt), ".tar.gzip") {
		return fmt.Errorf("media type %s: bootd pushes gzip-compressed tar layers", mt)
	}
	want, err := l.DiffID()
	if err != nil {
		return err
	}
	// Compressed() checks the layer's digest when it reaches the end.
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	z, err := gzip.NewReader(&countingReader{rc, &r.downloaded})
	if err != nil {
		return err
	}
	h := sha256.New()
	if err := x.extract(io.TeeReader(z, h)); err != nil {
		return err
	}
	// The rest of the stream (tar padding, gzip trailer) is read so that
	// both digests cover all of it.
	if _, err := io.Copy(h, z); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	if got := sum(h); got != want {
		return fmt.Errorf("diff ID %s, the config says %s", got, want)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Flatten writes the file system of any OCI or Docker image (whiteouts
// applied, as a container runtime would) into dir as a root tree. src is
// a registry reference, a `docker save` tarball, or an OCI layout
// directory (oci-layout file inside).
func Flatten(ctx context.Context, src, dir string, opt Options) error {
	img, err := openAny(ctx, src, opt)
	if err != nil {
		return err
	}
	x, err := newExtractor(dir)
	if err != nil {
		return err
	}
	defer x.close()
	x.mkParents = true
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := x.extract(rc); err != nil {
		return fmt.Errorf("unpacking %s: %w", src, err)
	}
	return x.finish()
}

func openAny(ctx context.Context, src string, opt Options) (v1.Image, error) {
	if st, err := os.Stat(src); err == nil {
		if st.IsDir() {
			p, err := layout.FromPath(src)
			if err != nil {
				return nil, fmt.Errorf("%s: not an OCI layout: %w", src, err)
			}
			idx, err := p.ImageIndex()
			if err != nil {
				return nil, err
			}
			m, err := idx.IndexManifest()
			if err != nil {
				return nil, err
			}
			if len(m.Manifests) != 1 {
				return nil, fmt.Errorf("%s: %d images in the layout, want one", src, len(m.Manifests))
			}
			return idx.Image(m.Manifests[0].Digest)
		}
		img, err := tarball.ImageFromPath(src, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: not a docker save archive: %w", src, err)
		}
		return img, nil
	}
	r, err := name.ParseReference(src, opt.nameOpts()...)
	if err != nil {
		return nil, fmt.Errorf("%s: neither a file nor an image reference: %w", src, err)
	}
	img, err := remote.Image(r, append(opt.remoteOpts(ctx, nil, nil), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))...)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", r, err)
	}
	return img, nil
}

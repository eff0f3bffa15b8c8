// Package oci ships image generations through OCI registries, for sites
// with several masters: `bootd image push` on one master, `bootd image
// pull` on the others. The registry is the standard engine for moving file
// trees between machines (distribution, Harbor, Zot, any cloud registry),
// with its own authentication, storage and replication, so bootd adds no
// replication of its own.
//
// A generation travels as an OCI image: one layer per dpkg package (plus
// layers for files no package owns, and one for the boot files; see
// layers.go), a config whose labels name the image, the generation and
// the fingerprint of what bootd's NFS server answers for the tree, and
// image.json as a label. A pull reproduces the tree with every attribute
// the export serves (modes with setuid, setgid and sticky bits, owners,
// nanosecond mtimes, hard links, symlinks, device nodes, FIFOs, extended
// attributes), so a replica gives nodes the same file handles: the caller
// checks the fingerprint before it publishes.
//
// It also flattens any other OCI or Docker image into a root tree, for
// `bootd image import`.
//
// go-containerregistry is used rather than oras-go: it has the image
// model (layers, diff IDs, configs), the Docker credential helpers and
// config.json, whiteout-aware flattening for imports, and a registry
// client that skips blobs the registry has, which is what makes an update
// cheap to push.
package oci

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Labels of a generation's image config.
const (
	LabelImage       = "dev.bootd.image"
	LabelGeneration  = "dev.bootd.generation"
	LabelFingerprint = "dev.bootd.nfs-fingerprint"
	LabelMeta        = "dev.bootd.image-json"
	LabelBoot        = "dev.bootd.boot-files"
	annotationLayer  = "dev.bootd.layer"
)

// Options say how to reach a registry.
type Options struct {
	// Insecure talks to a registry without verifying its TLS certificate,
	// or over plain HTTP. Without it, go-containerregistry falls back to
	// plain HTTP only for loopback and private (RFC 1918) addresses.
	Insecure bool
	// Username and Password, when set, are used instead of the Docker
	// config file ($DOCKER_CONFIG/config.json, ~/.docker/config.json and
	// its credential helpers).
	Username, Password string
	// Progress gets one line per step; nil is quiet.
	Progress io.Writer
	// TempDir holds compressed layers while they are pushed.
	TempDir string
}

func (o Options) say(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "bootd image: "+format+"\n", args...)
	}
}

func (o Options) nameOpts() []name.Option {
	if o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// remoteOpts are the registry client's options; uploaded counts the bytes
// sent in request bodies (blobs and manifests).
func (o Options) remoteOpts(ctx context.Context, uploaded, uploads *atomic.Int64) []remote.Option {
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	if o.Insecure {
		tr.TLSClientConfig.InsecureSkipVerify = true
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(countingTransport{tr, uploaded, uploads}), remote.WithJobs(runtime.NumCPU() + 2)}
	if o.Username != "" || o.Password != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: o.Username, Password: o.Password}))
	} else {
		opts = append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	return opts
}

type countingTransport struct {
	rt       http.RoundTripper
	n, blobs *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && c.n != nil {
		r.Body = &countingBody{r.Body, c.n}
	}
	if c.blobs != nil && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/") && r.URL.Query().Get("mount") == "" {
		c.blobs.Add(1)
	}
	return c.rt.RoundTrip(r)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// Generation is a generation to push.
type Generation struct {
	Name        string
	Gen         int
	Dir         string // STATE/images/NAME/GEN: root/, boot/, image.json
	Fingerprint string // nfs.Fingerprint of root/
}

// PushReport says what a push did.
type PushReport struct {
	Digest   string // the manifest's
	Layers   int
	Bytes    int64 // compressed size of all layers
	NewBlobs int   // blobs uploaded (layers and config the registry lacked)
	Uploaded int64 // bytes sent in request bodies, manifest included
	Seconds  float64
}

// Push uploads a generation to refs[0] and tags it with the other refs
// (same repository). Layers the registry already has are not sent.
func Push(ctx context.Context, g Generation, refs []string, opt Options) (PushReport, error) {
	start := time.Now()
	var rep PushReport
	if len(refs) == 0 {
		return rep, errors.New("push: no reference")
	}
	var parsed []name.Reference
	for _, r := range refs {
		ref, err := name.ParseReference(r, opt.nameOpts()...)
		if err != nil {
			return rep, fmt.Errorf("reference %q: %w", r, err)
		}
		parsed = append(parsed, ref)
	}
	plans, err := planLayers(g.Dir)
	if err != nil {
		return rep, err
	}
	cache := filepath.Join(opt.TempDir, "oci-layers")
	if opt.TempDir == "" {
		if cache, err = os.MkdirTemp("", "bootd-push-"); err != nil {
			return rep, fmt.Errorf("push: %w", err)
		}
		defer os.RemoveAll(cache)
	} else if err := os.MkdirAll(cache, 0o700); err != nil {
		return rep, fmt.Errorf("push: %w", err)
	}
	opt.say("packing %s generation %d into %d layers", g.Name, g.Gen, len(plans))
	layers, err := packLayers(ctx, g.Dir, plans, cache)
	if err != nil {
		return rep, err
	}
	// The cache keeps the layers of the last push only: its size is one
	// compressed image.
	keep := map[string]bool{}
	for _, l := range layers {
		keep[filepath.Base(l.path)] = true
		keep[filepath.Base(l.path)+".json"] = true
	}
	if ents, err := os.ReadDir(cache); err == nil {
		for _, e := range ents {
			if !keep[e.Name()] {
				os.Remove(filepath.Join(cache, e.Name()))
			}
		}
	}
	meta, _ := os.ReadFile(filepath.Join(g.Dir, "image.json"))
	bootSums, err := BootSums(g.Dir)
	if err != nil {
		return rep, err
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH, OS: "linux",
		Config: v1.Config{Labels: map[string]string{
			LabelImage: g.Name, LabelGeneration: strconv.Itoa(g.Gen), LabelFingerprint: g.Fingerprint,
			LabelMeta: string(meta), LabelBoot: bootSums,
		}},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return rep, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var adds []mutate.Addendum
	for i, l := range layers {
		adds = append(adds, mutate.Addendum{Layer: l, Annotations: map[string]string{annotationLayer: plans[i].key}, MediaType: types.OCILayer})
		rep.Bytes += l.size
	}
	if img, err = mutate.Append(img, adds...); err != nil {
		return rep, err
	}
	var uploaded atomic.Int64
	var uploads atomic.Int64
	ropts := opt.remoteOpts(ctx, &uploaded, &uploads)
	rep.Layers = len(layers)
	opt.say("pushing %d layers (%d MiB) to %s; the registry is sent only those it lacks", rep.Layers, rep.Bytes>>20, parsed[0])
	if err := remote.Write(parsed[0], img, ropts...); err != nil {
		return rep, fmt.Errorf("pushing to %s: %w", parsed[0], err)
	}
	for _, ref := range parsed[1:] {
		if err := remote.Tag(ref.Context().Tag(ref.Identifier()), img, ropts...); err != nil {
			return rep, fmt.Errorf("tagging %s: %w", ref, err)
		}
	}
	d, _ := img.Digest()
	rep.Digest = d.String()
	rep.Uploaded = uploaded.Load()
	rep.NewBlobs = int(uploads.Load())
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// fileLayer is a gzip-compressed layer kept in a file, with its digests
// known: go-containerregistry would otherwise read it again to find them.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *fileLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)     { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}
func (l *fileLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{z, f}, nil
}

// packLayers writes every layer, gzip-compressed, into the cache
// directory tmp (unless it is there), on as many CPUs as there are.
func packLayers(ctx context.Context, dir string, plans []layerPlan, tmp string) ([]*fileLayer, error) {
	out := make([]*fileLayer, len(plans))
	errs := make([]error, len(plans))
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(plans) || ctx.Err() != nil {
					return
				}
				out[i], errs[i] = cachedLayer(dir, plans[i], tmp)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// cachedLayer returns a layer from the cache when every entry in it is
// the inode it was when the layer was packed: same path, device, inode
// number and ctime (which moves with any change to contents, mode, owner
// or extended attributes), and packs it otherwise. A generation never
// changes, so pushing the next one compresses only what differs.
func cachedLayer(dir string, p layerPlan, cache string) (*fileLayer, error) {
	h := sha256.New()
	fmt.Fprintf(h, "bootd layer v1 %s\x00", p.key)
	for _, e := range p.entries {
		st := &e.st
		fmt.Fprintf(h, "%s\x00%s\x00%t %d %d %d %d.%d %d %d %d %d.%d\n", e.rel, e.link, e.implied, st.Dev, st.Ino, st.Size,
			st.Ctim.Sec, st.Ctim.Nsec, st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
	}
	key := hex.EncodeToString(h.Sum(nil))
	file := filepath.Join(cache, key+".tar.gz")
	if b, err := os.ReadFile(file + ".json"); err == nil {
		var c struct {
			Digest, DiffID string
			Size           int64
		}
		if json.Unmarshal(b, &c) == nil {
			d, err1 := v1.NewHash(c.Digest)
			di, err2 := v1.NewHash(c.DiffID)
			if fi, err := os.Stat(file); err == nil && err1 == nil && err2 == nil && fi.Size() == c.Size {
				return &fileLayer{path: file, digest: d, diffID: di, size: c.Size}, nil
			}
		}
	}
	l, err := packLayer(dir, p, file+".tmp")
	if err != nil {
		os.Remove(file + ".tmp")
		return nil, err
	}
	if err := os.Rename(file+".tmp", file); err != nil {
		return nil, err
	}
	l.path = file
	b, _ := json.Marshal(struct {
		Digest, DiffID string
		Size           int64
	}{l.digest.String(), l.diffID.String(), l.size})
	if err := os.WriteFile(file+".json", b, 0o600); err != nil {
		return nil, err
	}
	return l, nil
}

func packLayer(dir string, p layerPlan, file string) (*fileLayer, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	compressed, uncompressed := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, compressed)}
	// gzip's header carries no name and no time: the same files give the
	// same bytes, so the registry recognises a layer it has.
	z, _ := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	if err := writeLayer(io.MultiWriter(z, uncompressed), dir, p); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &fileLayer{path: file, digest: sum(compressed), diffID: sum(uncompressed), size: cw.n}, nil
}

func sum(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
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

// BootSums digests a generation's boot files (boot/vmlinuz and
// boot/initrd.img), so that a master that has the generation already can
// tell whether its boot files are the ones pushed.
func BootSums(genDir string) (string, error) {
	var parts []string
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		b, err := os.ReadFile(filepath.Join(genDir, bootDir, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s=sha256:%x", f, sha256.Sum256(b)))
	}
	return strings.Join(parts, " "), nil
}

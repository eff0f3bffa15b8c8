package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/image"
	"github.com/bootd/bootd/nfs"
	"github.com/bootd/bootd/oci"
	"github.com/bootd/bootd/store"
)

// registryCredentials is said once for push, pull and import.
const registryCredentials = `Registry credentials come from the Docker config file
($DOCKER_CONFIG/config.json or ~/.docker/config.json) unless --username is
given.`

type registryFlags struct {
	insecure      bool
	username      string
	passwordStdin bool
}

func (r *registryFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&r.insecure, "insecure", false, "do not verify the registry's TLS certificate; allow plain HTTP (it is used without this flag only for loopback and private addresses)")
	fs.StringVar(&r.username, "username", "", "registry `USER` (default: the Docker config file's credentials)")
	fs.BoolVar(&r.passwordStdin, "password-stdin", false, "read the registry password from standard input")
}

// receiveFlags are those of a verb that makes a generation from a
// registry: the registry's, --name and --no-publish.
type receiveFlags struct {
	registryFlags
	name      string
	noPublish bool
}

func (r *receiveFlags) add(fs *pflag.FlagSet, nameUsage string) {
	r.registryFlags.add(fs)
	fs.StringVar(&r.name, "name", "", nameUsage)
	fs.BoolVar(&r.noPublish, "no-publish", false, "make the generation but leave current where it is")
}

func (r *registryFlags) options(cfg *config.Config) (oci.Options, error) {
	o := oci.Options{Insecure: r.insecure, Username: r.username, Progress: os.Stdout, TempDir: filepath.Join(cfg.StateDir, "cache")}
	if r.passwordStdin {
		if o.Username == "" {
			return o, usagef("--password-stdin needs --username")
		}
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return o, fmt.Errorf("reading the password from standard input: %w", err)
		}
		o.Password = strings.TrimRight(line, "\r\n")
	}
	if err := os.MkdirAll(o.TempDir, 0o755); err != nil {
		return o, err
	}
	return o, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func (a *app) imagePushCmd() *cobra.Command {
	var reg registryFlags
	c := a.storeVerb("push NAME[/GEN] REPO[:TAG]", "upload a generation to an OCI registry", 2,
		func(cfg *config.Config, st *store.Store, args []string) error {
			return pushImage(cfg, st, args[0], args[1], &reg)
		})
	c.Long = `Upload a generation (default: the current one) to an OCI registry, tagged
GEN (and latest, for the current generation) unless REPO names a tag.
Layers the registry has already are not sent. ` + registryCredentials
	c.Example = "  bootd image push bookworm registry.example.org/hpc/bookworm"
	reg.add(c.Flags())
	return c
}

func (a *app) imagePullCmd() *cobra.Command {
	var r receiveFlags
	c := a.storeVerb("pull REF", "make the generation a registry reference names, under the same number", 1,
		func(cfg *config.Config, st *store.Store, args []string) error {
			return pullImage(cfg, st, args[0], r.name, !r.noPublish, &r.registryFlags)
		})
	c.Long = `Make the generation REF names (pushed by bootd image push on another
master), under the same name and number, and check that bootd's NFS server
will answer the same file handles for it as on the master that pushed it:
nodes fail over between masters without remounting. ` + registryCredentials
	r.add(c.Flags(), "image `NAME` (default: the name it was pushed under)")
	return c
}

func (a *app) imageImportCmd() *cobra.Command {
	var r receiveFlags
	c := a.storeVerb("import REF|ARCHIVE|OCI-DIR --name NAME", "make a new generation from any Debian container image", 1,
		func(cfg *config.Config, st *store.Store, args []string) error {
			return importImage(cfg, st, args[0], r.name, !r.noPublish, &r.registryFlags, a.bootFiles(cfg))
		})
	c.Args = cobra.MatchAll(c.Args, func(cmd *cobra.Command, args []string) error {
		if r.name == "" {
			return errors.New("--name NAME is required")
		}
		return nil
	})
	c.Long = `Turn a Debian container image (a registry reference, a docker save archive
or an OCI layout directory) into a new generation of image NAME, prepared
as image build prepares one, with its initrd. ` + registryCredentials
	c.Example = "  bootd image import registry.example.org/hpc/debian-mpi:12 --name mpi\n  bootd image import ./image.tar --name mpi"
	r.add(c.Flags(), "image `NAME` (required)")
	return c
}

// pushImage pushes NAME[/GEN] to repo: tagged GEN, and latest when GEN is
// current, unless repo names its tag.
func pushImage(cfg *config.Config, st *store.Store, what, repo string, reg *registryFlags) error {
	name, genStr, hasGen := strings.Cut(what, "/")
	cur, curErr := st.Current(name)
	gen := cur
	if hasGen {
		g, err := strconv.Atoi(genStr)
		if err != nil || g <= 0 {
			return fmt.Errorf("%s: want NAME or NAME/GEN", what)
		}
		gen = g
	} else if curErr != nil {
		return curErr
	}
	if err := st.Has(name, gen); err != nil {
		return err
	}
	opt, err := reg.options(cfg)
	if err != nil {
		return err
	}
	last := repo[strings.LastIndex(repo, "/")+1:]
	refs := []string{repo}
	switch {
	case strings.Contains(last, "@"):
		return fmt.Errorf("%s: push to a tag, not a digest", repo)
	case !strings.Contains(last, ":"):
		refs = []string{repo + ":" + strconv.Itoa(gen)}
		if gen == cur {
			refs = append(refs, repo+":latest")
		}
	}
	fp, err := nfs.Fingerprint(name, gen, st.RootDir(name, gen))
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	rep, err := oci.Push(ctx, oci.Generation{Name: name, Gen: gen, Dir: st.GenDir(name, gen), Fingerprint: fp}, refs, opt)
	if err != nil {
		return err
	}
	fmt.Printf("%s generation %d pushed to %s (%s)\n", name, gen, strings.Join(refs, ", "), rep.Digest)
	fmt.Printf("%d layers, %.1f MiB compressed; uploaded %d blobs, %.1f MiB (%.1f%%), in %.1f s\n", rep.Layers, mib(rep.Bytes), rep.NewBlobs, mib(rep.Uploaded), 100*float64(rep.Uploaded)/float64(max(rep.Bytes, 1)), rep.Seconds)
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// pullImage makes the generation ref names, under its own number.
func pullImage(cfg *config.Config, st *store.Store, ref, name string, publish bool, reg *registryFlags) error {
	opt, err := reg.options(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	r, err := oci.Fetch(ctx, ref, opt)
	if err != nil {
		return err
	}
	if name == "" {
		name = r.Name
	}
	if err := store.ValidName(name); err != nil {
		return err
	}
	fmt.Printf("%s: %s generation %d (%s), %.1f MiB\n", ref, r.Name, r.Gen, r.Digest, mib(r.Bytes))
	// The tree must give the handles it gave on the master that pushed it
	// (under that master's name, which the handles carry).
	check := func(root string) error {
		fp, err := nfs.Fingerprint(r.Name, r.Gen, root)
		if err != nil {
			return err
		}
		if fp != r.Fingerprint {
			return fmt.Errorf("the pulled tree would give nodes other file handles or attributes than the master that pushed it (fingerprint %s, pushed %s): not published", fp, r.Fingerprint)
		}
		return nil
	}
	if st.Has(name, r.Gen) == nil {
		if err := check(st.RootDir(name, r.Gen)); err != nil {
			return fmt.Errorf("%s generation %d is here already, and differs: %w", name, r.Gen, err)
		}
		if sums, err := oci.BootSums(st.GenDir(name, r.Gen)); err != nil || sums != r.BootSums {
			return fmt.Errorf("%s generation %d is here already with other boot files (its initrd rebuilt with initrd build --force on one master?): bootd image rm %s %d, then pull again", name, r.Gen, name, r.Gen)
		}
		fmt.Printf("%s generation %d is here already, the same tree\n", name, r.Gen)
	} else {
		_, err = image.Receive(ctx, st, image.ReceiveOptions{
			Name: name, Gen: r.Gen, Progress: os.Stdout,
			Fill:  func(ctx context.Context, work string) error { return r.Unpack(ctx, work, opt) },
			Check: func(work string) error { return check(filepath.Join(work, "root")) },
		})
		if err != nil {
			return err
		}
	}
	if publish {
		if err := st.Publish(name, r.Gen); err != nil {
			return err
		}
		fmt.Printf("%s: new boots get generation %d\n", name, r.Gen)
	}
	return nil
}

// importImage makes a new generation from any Debian container image.
func importImage(cfg *config.Config, st *store.Store, src, name string, publish bool, reg *registryFlags, bootFiles func(root, boot string) (string, error)) error {
	if err := store.ValidName(name); err != nil {
		return err
	}
	opt, err := reg.options(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	gen, err := image.Receive(ctx, st, image.ReceiveOptions{
		Name: name, Progress: os.Stdout, Prepare: true, Settings: cfg.Image, Publish: publish,
		Fill: func(ctx context.Context, work string) error {
			root := filepath.Join(work, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				return err
			}
			fmt.Printf("bootd image: unpacking %s\n", src)
			return oci.Flatten(ctx, src, root, opt)
		},
		Initrd: bootFiles,
		Meta:   image.Meta{Mirror: src, Tool: "import"},
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s: generation %d imported from %s\n", name, gen, src)
	return nil
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/image"
	"github.com/bootd/bootd/initrd"
	"github.com/bootd/bootd/store"
)

const imageUsage = `usage:
  bootd image build NAME [--suite trixie|bookworm] [--mirror URL] [--include pkg,...] [--hook SCRIPT] [--no-publish]
  bootd image update NAME [--install pkg,...] [--upgrade] [--run 'CMD']... [--no-publish]
  bootd image list
  bootd image publish NAME GEN
  bootd image rollback NAME
  bootd image rm NAME GEN [--force]
  bootd image gc NAME [--keep K]
  bootd image diff NAME GEN1 GEN2
  bootd image push NAME[/GEN] REPO[:TAG] [--insecure] [--username U --password-stdin]
  bootd image pull REF [--name NAME] [--no-publish] [--insecure] [--username U --password-stdin]
  bootd image import REF|ARCHIVE|OCI-DIR --name NAME [--no-publish] [--insecure]

push uploads a generation (default: the current one) to an OCI registry,
tagged GEN (and latest, for the current generation) unless REPO names a
tag; layers the registry has are not sent. pull makes the generation a
REF names, under the same name and number, and checks that bootd's NFS
server will answer the same file handles for it as on the master that
pushed it. import turns any Debian container image (a registry
reference, a docker save archive or an OCI layout directory) into a new
generation, prepared as image build prepares one. Registry credentials
come from the Docker config file ($DOCKER_CONFIG/config.json or
~/.docker/config.json) unless --username is given.`

func runImage(args []string) error {
	if len(args) == 0 {
		return errors.New(imageUsage)
	}
	sub, args := args[0], args[1:]
	var c common
	fs := newFlags("image "+sub, "", imageUsage, &c)
	var suite, mirror, include *string
	var hooks multiFlag
	var noPublish, upgrade, force *bool
	var runs multiFlag
	var keep *int
	switch sub {
	case "update":
		include = fs.String("install", "", "packages to install, comma-separated")
		upgrade = fs.Bool("upgrade", false, "apt-get dist-upgrade")
		fs.Var(&runs, "run", "shell `CMD` run in the image after apt (repeatable)")
		noPublish = fs.Bool("no-publish", false, "make the generation but leave current where it is")
	case "rm":
		force = fs.Bool("force", false, "remove it even though nodes run it (they will fail)")
	case "gc":
		keep = fs.Int("keep", 3, "keep this many newest generations besides the current one and those nodes run")
	}
	var reg registryFlags
	var importName *string
	switch sub {
	case "push", "pull", "import":
		reg.add(fs)
		if sub != "push" {
			noPublish = fs.Bool("no-publish", false, "make the generation but leave current where it is")
			importName = fs.String("name", "", "image `NAME` (pull: default the name it was pushed under)")
		}
	}
	if sub == "build" {
		suite = fs.String("suite", "trixie", "Debian suite: trixie (13, today's stable) or bookworm (12)")
		mirror = fs.String("mirror", "", "Debian mirror `URL` (default image.mirror, or "+image.DefaultMirror+")")
		include = fs.String("include", "", "extra packages, comma-separated")
		fs.Var(&hooks, "hook", "`SCRIPT` run with the prepared root as $1 (repeatable; a bare NAME is ./NAME, never looked up in $PATH)")
		noPublish = fs.Bool("no-publish", false, "build the generation but leave current where it is")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	cfg, log, err := c.load()
	if err != nil {
		return err
	}
	st := store.New(cfg.StateDir)
	gen := func(s string) (int, error) {
		g, err := strconv.Atoi(s)
		if err != nil || g <= 0 {
			return 0, fmt.Errorf("generation %q: want a positive number", s)
		}
		return g, nil
	}
	switch {
	case sub == "build" && len(pos) == 1:
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var inc []string
		if *include != "" {
			inc = strings.Split(*include, ",")
		}
		g, err := image.Build(ctx, st, image.BuildOptions{
			Name: pos[0], Suite: *suite, Mirror: *mirror, Include: inc, Hooks: hooks,
			Settings: cfg.Image,
			CacheDir: filepath.Join(cfg.StateDir, "cache", "debs"),
			Progress: os.Stdout,
			Initrd:   func(root, boot string) (string, error) { return buildBootFiles(cfg, root, boot) },
			Publish:  !*noPublish,
		})
		if err != nil {
			return err
		}
		log.Info("image built", "image", pos[0], "generation", g)
		return nil
	case sub == "update" && len(pos) == 1:
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var inc []string
		if *include != "" {
			inc = strings.Split(*include, ",")
		}
		g, err := image.Update(ctx, st, image.UpdateOptions{
			Name: pos[0], Install: inc, Upgrade: *upgrade, Run: runs, Settings: cfg.Image,
			Progress: os.Stdout, Publish: !*noPublish,
			Initrd: func(root, boot string) (string, error) { return buildBootFiles(cfg, root, boot) },
		})
		if err != nil {
			return err
		}
		log.Info("image updated", "image", pos[0], "generation", g)
		return nil
	case sub == "push" && len(pos) == 2:
		return pushImage(cfg, st, pos[0], pos[1], reg)
	case sub == "pull" && len(pos) == 1:
		return pullImage(cfg, st, pos[0], *importName, !*noPublish, reg)
	case sub == "import" && len(pos) == 1:
		if *importName == "" {
			return errors.New("bootd image import: --name NAME is required")
		}
		return importImage(cfg, st, pos[0], *importName, !*noPublish, reg)
	case sub == "diff" && len(pos) == 3:
		a, err := gen(pos[1])
		if err != nil {
			return err
		}
		b, err := gen(pos[2])
		if err != nil {
			return err
		}
		d, err := image.DiffGenerations(st, pos[0], a, b)
		if err != nil {
			return err
		}
		fmt.Printf("%s %d -> %d: %d packages, %d paths changed\n", pos[0], a, b, len(d.Packages), len(d.Files))
		for _, l := range d.Packages {
			fmt.Println(l)
		}
		if len(d.Packages) > 0 && len(d.Files) > 0 {
			fmt.Println()
		}
		for _, l := range d.Files {
			fmt.Println(l)
		}
		return nil
	case sub == "gc" && len(pos) == 1:
		removed, err := image.GC(st, pos[0], *keep, inUse(cfg))
		for _, g := range removed {
			fmt.Printf("%s: generation %d removed\n", pos[0], g)
		}
		if err == nil && len(removed) == 0 {
			fmt.Printf("%s: nothing to remove\n", pos[0])
		}
		return err
	case sub == "list" && len(pos) == 0:
		infos, err := image.List(st)
		if err != nil {
			return err
		}
		running := inUse(cfg)
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IMAGE\tGEN\tCURRENT\tSIZE\tNEW\tBUILT\tFROM\tKERNEL\tBOOTABLE\tNODES")
		for _, i := range infos {
			cur, size, built, from, boot := "", "-", "-", "-", "no"
			if i.Current {
				cur = "*"
			}
			if i.Meta.Bytes > 0 {
				size = fmt.Sprintf("%d MiB", i.Meta.Bytes>>20)
			}
			if !i.Meta.Built.IsZero() {
				built = i.Meta.Built.Format("2006-01-02 15:04")
				from = fmt.Sprintf("%s %s", i.Meta.Suite, i.Meta.Mirror)
				if i.Meta.Parent > 0 {
					from = fmt.Sprintf("gen %d + %s", i.Meta.Parent, i.Meta.Update)
				}
			}
			if i.HasBoot {
				boot = "yes"
			}
			nodes := running(i.Name, i.Generation)
			who := fmt.Sprint(len(nodes))
			if len(nodes) > 0 {
				who += " (" + strings.Join(nodes, " ") + ")"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d MiB\t%s\t%s\t%s\t%s\t%s\n", i.Name, i.Generation, cur, size, i.NewBytes>>20, built, from, i.Meta.Kernel, boot, who)
		}
		return tw.Flush()
	case sub == "publish" && len(pos) == 2:
		g, err := gen(pos[1])
		if err != nil {
			return err
		}
		if err := st.Publish(pos[0], g); err != nil {
			return err
		}
		fmt.Printf("%s: new boots get generation %d\n", pos[0], g)
		return nil
	case sub == "rollback" && len(pos) == 1:
		g, err := image.Rollback(st, pos[0])
		if err != nil {
			return err
		}
		fmt.Printf("%s: rolled back, new boots get generation %d\n", pos[0], g)
		return nil
	case sub == "rm" && len(pos) == 2:
		g, err := gen(pos[1])
		if err != nil {
			return err
		}
		if nodes := inUse(cfg)(pos[0], g); len(nodes) > 0 && !*force {
			return fmt.Errorf("%s generation %d: nodes run it (%s); reboot them into another generation first, or --force", pos[0], g, strings.Join(nodes, ", "))
		}
		if err := image.Remove(st, pos[0], g); err != nil {
			return err
		}
		fmt.Printf("%s: generation %d removed\n", pos[0], g)
		return nil
	}
	return errors.New(imageUsage)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// buildBootFiles generates the initrd of a root into boot/ and copies its
// kernel beside it; it returns the kernel version.
func buildBootFiles(cfg *config.Config, root, boot string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	res, err := initrd.Build(&buf, initrd.Options{Root: root, Init: self, ExtraModules: cfg.Initrd.ExtraModules, Compression: cfg.Initrd.Compression})
	if err != nil {
		return "", err
	}
	kernel, err := os.ReadFile(res.Kernel)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(boot, 0o755); err != nil {
		return "", err
	}
	for name, data := range map[string][]byte{"vmlinuz": kernel, "initrd.img": buf.Bytes()} {
		if err := replaceFile(filepath.Join(boot, name), data, true); err != nil {
			return "", err
		}
	}
	return res.KernelVersion, nil
}

// inUse says which nodes run a generation, from the node records the
// running bootd keeps under STATE (a node runs what it booted until it
// is down or lost).
func inUse(cfg *config.Config) func(name string, gen int) []string {
	evs := events.New(1)
	evs.Load(filepath.Join(cfg.StateDir, "run", "nodes.json"))
	by := map[string][]string{}
	for _, n := range evs.Nodes() {
		if n.Image == "" || n.Stage == events.StageDown || n.Stage == events.StageLost {
			continue
		}
		who := n.Hostname
		if who == "" {
			who = n.MAC
		}
		k := fmt.Sprintf("%s/%d", n.Image, n.Generation)
		by[k] = append(by[k], who)
	}
	return func(name string, gen int) []string { return by[fmt.Sprintf("%s/%d", name, gen)] }
}

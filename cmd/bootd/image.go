package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/image"
	"github.com/bootd/bootd/store"
)

func newImageCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "build, list, publish, roll back, share and remove image generations",
		Long: `Images live in STATE/images/NAME/GEN (state_dir of the config): each build or
update makes a new generation, and "current" names the one new boots get.
Nodes keep the generation they booted until they reboot.`,
	}
	c.AddCommand(a.imageBuildCmd(), a.imageUpdateCmd(), a.imageListCmd(), a.imagePublishCmd(),
		a.imageRollbackCmd(), a.imageRmCmd(), a.imageGCCmd(), a.imageDiffCmd(),
		a.imagePushCmd(), a.imagePullCmd(), a.imageImportCmd())
	return c
}

// storeVerb is an image verb of n arguments that works on the image store
// the config names.
func (a *app) storeVerb(use, short string, n int, fn func(cfg *config.Config, st *store.Store, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(n),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			return fn(cfg, store.New(cfg.StateDir), args)
		},
	}
}

func (a *app) imageBuildCmd() *cobra.Command {
	var o image.BuildOptions
	var noPublish bool
	c := a.storeVerb("build NAME", "build a new generation of an image from Debian with mmdebstrap", 1,
		func(cfg *config.Config, st *store.Store, args []string) error {
			ctx, stop := signalContext()
			defer stop()
			o.Name, o.Publish, o.Settings = args[0], !noPublish, cfg.Image
			o.CacheDir = filepath.Join(cfg.StateDir, "cache", "debs")
			o.Progress, o.Initrd = os.Stdout, a.bootFiles(cfg)
			g, err := image.Build(ctx, st, o)
			if err != nil {
				return err
			}
			a.log.Info("image built", "image", o.Name, "generation", g)
			return nil
		})
	c.Long = `Build a new generation of image NAME from a Debian mirror with mmdebstrap,
prepare it for a read-only NFS root, generate its initrd and, unless
--no-publish, make it the generation new boots get.`
	fs := c.Flags()
	o.Suite = "trixie"
	choiceVar(c, fs, &o.Suite, "suite", "Debian suite: trixie (13, today's stable) or bookworm (12)", slices.Sorted(maps.Keys(image.Suites))...)
	fs.StringVar(&o.Mirror, "mirror", "", "Debian mirror `URL` (default image.mirror, or "+image.DefaultMirror+")")
	fs.StringSliceVar(&o.Include, "include", nil, "extra `packages`, comma-separated or repeated")
	fs.StringArrayVar(&o.Hooks, "hook", nil, "`SCRIPT` run with the prepared root as $1 (repeatable; a bare NAME is ./NAME, never looked up in $PATH)")
	fs.BoolVar(&noPublish, "no-publish", false, "build the generation but leave current where it is")
	return c
}

func (a *app) imageUpdateCmd() *cobra.Command {
	var o image.UpdateOptions
	var noPublish bool
	c := a.storeVerb("update NAME", "make a new generation from the current one: install, upgrade, run commands", 1,
		func(cfg *config.Config, st *store.Store, args []string) error {
			ctx, stop := signalContext()
			defer stop()
			o.Name, o.Publish, o.Settings = args[0], !noPublish, cfg.Image
			o.Progress, o.Initrd = os.Stdout, a.bootFiles(cfg)
			g, err := image.Update(ctx, st, o)
			if err != nil {
				return err
			}
			a.log.Info("image updated", "image", o.Name, "generation", g)
			return nil
		})
	c.Long = `Make a new generation of image NAME from its current one: apt-get install
the --install packages, dist-upgrade with --upgrade, then run each --run
command in it; then generate its initrd and, unless --no-publish, make it
the generation new boots get.`
	fs := c.Flags()
	fs.StringSliceVar(&o.Install, "install", nil, "`packages` to install, comma-separated or repeated")
	fs.BoolVar(&o.Upgrade, "upgrade", false, "apt-get dist-upgrade")
	fs.StringArrayVar(&o.Run, "run", nil, "shell `CMD` run in the image after apt (repeatable)")
	fs.BoolVar(&noPublish, "no-publish", false, "make the generation but leave current where it is")
	return c
}

func (a *app) imageListCmd() *cobra.Command {
	return a.storeVerb("list", "list every generation: size, origin, kernel, whether it boots, the nodes running it", 0,
		func(cfg *config.Config, st *store.Store, args []string) error {
			infos, err := image.List(st)
			if err != nil {
				return err
			}
			printImages(infos, inUse(cfg))
			// What the table cannot show (a dangling current, strays,
			// leftovers of dead builds) is said, not hidden.
			problems, err := st.Problems()
			for _, p := range problems {
				hint := ""
				if p.Stale {
					hint = " (bootd image gc deletes it)"
				}
				fmt.Fprintf(os.Stderr, "warning: %s: %s%s\n", p.Path, p.What, hint)
			}
			return err
		})
}

func printImages(infos []image.Info, running func(string, int) []string) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
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
}

// genArgs checks that the arguments at positions idx are generation
// numbers (positive), before the config is read.
func genArgs(idx ...int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		for _, i := range idx {
			if g, err := strconv.Atoi(args[i]); err != nil || g <= 0 {
				return fmt.Errorf("generation %q: want a positive number", args[i])
			}
		}
		return nil
	}
}

// gen is a generation argument genArgs checked.
func gen(s string) int {
	g, _ := strconv.Atoi(s)
	return g
}

func (a *app) imagePublishCmd() *cobra.Command {
	c := a.storeVerb("publish NAME GEN", "make generation GEN the one new boots of image NAME get", 2,
		func(cfg *config.Config, st *store.Store, args []string) error {
			g := gen(args[1])
			if err := st.Publish(args[0], g); err != nil {
				return err
			}
			fmt.Printf("%s: new boots get generation %d\n", args[0], g)
			return nil
		})
	c.Args = cobra.MatchAll(c.Args, genArgs(1))
	return c
}

func (a *app) imageRollbackCmd() *cobra.Command {
	return a.storeVerb("rollback NAME", "make the generation before the current one current again", 1,
		func(cfg *config.Config, st *store.Store, args []string) error {
			g, err := image.Rollback(st, args[0])
			if err != nil {
				return err
			}
			fmt.Printf("%s: rolled back, new boots get generation %d\n", args[0], g)
			return nil
		})
}

func (a *app) imageRmCmd() *cobra.Command {
	var force, all bool
	c := a.storeVerb("rm NAME GEN | NAME --all", "remove a generation no node runs, or a whole image", 0,
		func(cfg *config.Config, st *store.Store, args []string) error {
			if all {
				removed, err := image.RemoveImage(st, args[0], force, inUse(cfg))
				if err != nil {
					return err
				}
				fmt.Printf("%s: removed with its generations %v; its numbers are not handed out again\n", args[0], removed)
				return nil
			}
			g := gen(args[1])
			if nodes := inUse(cfg)(args[0], g); len(nodes) > 0 && !force {
				return fmt.Errorf("%s generation %d: nodes run it (%s); reboot them into another generation first, or --force", args[0], g, strings.Join(nodes, ", "))
			}
			if err := image.Remove(st, args[0], g); err != nil {
				return err
			}
			fmt.Printf("%s: generation %d removed\n", args[0], g)
			return nil
		})
	// --all and not a missing GEN: a forgotten number must not remove a
	// whole image.
	c.Args = func(cmd *cobra.Command, args []string) error {
		if all {
			return cobra.ExactArgs(1)(cmd, args)
		}
		if err := cobra.ExactArgs(2)(cmd, args); err != nil {
			return err
		}
		return genArgs(1)(cmd, args)
	}
	c.Flags().BoolVar(&force, "force", false, "remove it even though nodes run it (they will fail)")
	c.Flags().BoolVar(&all, "all", false, "remove the whole image NAME: every generation and its name")
	return c
}

func (a *app) imageGCCmd() *cobra.Command {
	var keep int
	c := a.storeVerb("gc [NAME]", "delete leftovers of dead builds; with NAME, old generations too: all but the newest --keep, the current one and those nodes run", 0,
		func(cfg *config.Config, st *store.Store, args []string) error {
			cleaned, err := image.CleanStale(st)
			for _, p := range cleaned {
				fmt.Printf("%s: deleted (%s)\n", p.Path, p.What)
			}
			if err != nil || len(args) == 0 {
				return err
			}
			removed, err := image.GC(st, args[0], keep, inUse(cfg))
			for _, g := range removed {
				fmt.Printf("%s: generation %d removed\n", args[0], g)
			}
			if err == nil && len(removed) == 0 {
				fmt.Printf("%s: no generation to remove\n", args[0])
			}
			return err
		})
	c.Args = cobra.MaximumNArgs(1)
	c.Flags().IntVar(&keep, "keep", 3, "keep this many newest generations besides the current one and those nodes run")
	return c
}

func (a *app) imageDiffCmd() *cobra.Command {
	c := a.storeVerb("diff NAME GEN1 GEN2", "the packages and paths that differ between two generations", 3,
		func(cfg *config.Config, st *store.Store, args []string) error {
			g1, g2 := gen(args[1]), gen(args[2])
			d, err := image.DiffGenerations(st, args[0], g1, g2)
			if err != nil {
				return err
			}
			fmt.Printf("%s %d -> %d: %d packages, %d paths changed\n", args[0], g1, g2, len(d.Packages), len(d.Files))
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
		})
	c.Args = cobra.MatchAll(c.Args, genArgs(1, 2))
	return c
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

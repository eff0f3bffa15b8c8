package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/initrd"
	"github.com/bootd/bootd/store"
)

type initrdFlags struct {
	image  string
	gen    int
	force  bool
	output string
}

func newInitrdCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "initrd",
		Short: "generate a generation's initrd and copy its kernel",
	}
	var f initrdFlags
	build := &cobra.Command{
		Use:   "build --image NAME",
		Short: "generate a generation's initrd and copy its kernel",
		Long: `Generate STATE/images/NAME/GEN/boot/initrd.img (bootd's init, the image's NIC,
NFS and overlay modules) and copy the image's kernel to boot/vmlinuz.
image build, update and import do this themselves; run it after upgrading
bootd, or with --output to look at an initrd.`,
		Args: cobra.MatchAll(noArgs, func(cmd *cobra.Command, args []string) error {
			if f.image == "" {
				return errors.New("--image NAME is required")
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error { return a.initrdBuild(f) },
	}
	fs := build.Flags()
	fs.StringVar(&f.image, "image", "", "image `NAME` (required)")
	fs.IntVar(&f.gen, "generation", 0, "generation `GEN` (default: the current one)")
	fs.BoolVar(&f.force, "force", false, "replace boot files that differ in a generation nodes may be booting")
	fs.StringVar(&f.output, "output", "", "write the initrd to `FILE` instead (the generation is not touched)")
	c.AddCommand(build)
	return c
}

func (a *app) initrdBuild(f initrdFlags) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	st := store.New(cfg.StateDir)
	g := f.gen
	if g == 0 {
		if g, err = st.Current(f.image); err != nil {
			return err
		}
	}
	if err := st.Has(f.image, g); err != nil {
		return err
	}
	opt, err := initrdOptions(cfg, st.RootDir(f.image, g))
	if err != nil {
		return err
	}
	start := time.Now()
	var res initrd.Result
	if f.output != "" {
		res, err = initrd.WriteFile(f.output, opt)
	} else {
		res, err = initrd.WriteBootFiles(st.BootDir(f.image, g), opt, f.force)
		if errors.Is(err, initrd.ErrDiffers) {
			err = fmt.Errorf("%w; --force replaces it (nodes booting now get one or the other)", err)
		}
	}
	a.warn(res.Warnings)
	if err != nil {
		return fmt.Errorf("building the initrd of %s generation %d: %w", f.image, g, err)
	}
	took := time.Since(start).Round(time.Millisecond)
	a.log.Info("initrd built", "image", f.image, "generation", g, "kernel", res.KernelVersion,
		"modules", len(res.Modules), "compression", res.Compression, "bytes", res.Size, "took", took)
	fmt.Printf("%s generation %d: initrd %d bytes (%s, %d modules, kernel %s) in %v\n",
		f.image, g, res.Size, res.Compression, len(res.Modules), res.KernelVersion, took)
	return nil
}

// initrdOptions are the initrd settings of the config for an image root;
// the init is this very binary.
func initrdOptions(cfg *config.Config, root string) (initrd.Options, error) {
	self, err := os.Executable()
	if err != nil {
		return initrd.Options{}, fmt.Errorf("finding bootd's own binary (the initrd's init): %w", err)
	}
	return initrd.Options{Root: root, Init: self, ExtraModules: cfg.Initrd.ExtraModules, Compression: cfg.Initrd.Compression}, nil
}

// bootFiles is the image package's Initrd hook: a new generation's boot
// files, with the warnings logged.
func (a *app) bootFiles(cfg *config.Config) func(root, boot string) (string, error) {
	return func(root, boot string) (string, error) {
		opt, err := initrdOptions(cfg, root)
		if err != nil {
			return "", err
		}
		res, err := initrd.WriteBootFiles(boot, opt, true)
		a.warn(res.Warnings)
		return res.KernelVersion, err
	}
}

func (a *app) warn(ws []string) {
	for _, w := range ws {
		a.log.Warn(w)
	}
}

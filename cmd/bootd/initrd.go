package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bootd/bootd/initrd"
	"github.com/bootd/bootd/store"
)

func runInitrd(args []string) error {
	if len(args) == 0 || args[0] != "build" {
		return errors.New("usage: bootd initrd build --image NAME [--generation GEN] [--force]")
	}
	var c common
	fs := newFlags("initrd build", "", "Generate STATE/images/NAME/GEN/boot/initrd.img (bootd's init, the image's NIC,\nNFS and overlay modules) and copy the image's kernel to boot/vmlinuz.", &c)
	image := fs.String("image", "", "image `NAME`")
	gen := fs.Int("generation", 0, "generation (default: the current one)")
	force := fs.Bool("force", false, "replace boot files that differ in a generation nodes may be booting")
	output := fs.String("output", "", "write the initrd to `FILE` instead (the generation is not touched)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *image == "" {
		fs.Usage()
		return errors.New("--image is required")
	}
	cfg, log, err := c.load()
	if err != nil {
		return err
	}
	st := store.New(cfg.StateDir)
	g := *gen
	if g == 0 {
		if g, err = st.Current(*image); err != nil {
			return err
		}
	}
	if err := st.Has(*image, g); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	start := time.Now()
	var buf bytes.Buffer
	res, err := initrd.Build(&buf, initrd.Options{
		Root:         st.RootDir(*image, g),
		Init:         self,
		ExtraModules: cfg.Initrd.ExtraModules,
		Compression:  cfg.Initrd.Compression,
	})
	if err != nil {
		return fmt.Errorf("building the initrd of %s generation %d: %w", *image, g, err)
	}
	took := time.Since(start)
	for _, w := range res.Warnings {
		log.Warn(w)
	}
	if *output != "" {
		if err := os.WriteFile(*output, buf.Bytes(), 0o644); err != nil {
			return err
		}
	} else {
		kernel, err := os.ReadFile(res.Kernel)
		if err != nil {
			return err
		}
		boot := st.BootDir(*image, g)
		if err := os.MkdirAll(boot, 0o755); err != nil {
			return err
		}
		for name, data := range map[string][]byte{"vmlinuz": kernel, "initrd.img": buf.Bytes()} {
			if err := replaceFile(filepath.Join(boot, name), data, *force); err != nil {
				return fmt.Errorf("%s generation %d: %w", *image, g, err)
			}
		}
	}
	log.Info("initrd built", "image", *image, "generation", g, "kernel", res.KernelVersion,
		"modules", len(res.Modules), "compression", res.Compression, "bytes", res.Size, "took", took.Round(time.Millisecond))
	fmt.Printf("%s generation %s: initrd %d bytes (%s, %d modules, kernel %s) in %v\n",
		*image, strconv.Itoa(g), res.Size, res.Compression, len(res.Modules), res.KernelVersion, took.Round(time.Millisecond))
	return nil
}

// replaceFile writes data atomically. A different existing file is only
// replaced with force: nodes may be booting this generation right now.
func replaceFile(path string, data []byte, force bool) error {
	if old, err := os.ReadFile(path); err == nil {
		if bytes.Equal(old, data) {
			return nil
		}
		if !force {
			return fmt.Errorf("%s exists and differs from what this bootd generates; --force replaces it (nodes booting now get one or the other)", path)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return os.Rename(tmp, path)
}

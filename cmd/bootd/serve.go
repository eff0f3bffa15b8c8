package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/bootd/bootd/nfs"
	"github.com/bootd/bootd/store"
)

func runServe(args []string) error {
	var c common
	fs := newFlags("serve", "", "Serve the image store to the cluster until interrupted.", &c)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errors.New("serve takes no arguments")
	}
	cfg, log, err := c.load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st := store.New(cfg.StateDir)
	log.Info("bootd starting", "config", cfg.Path, "state_dir", cfg.StateDir)

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	start := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
				stop()
			}
		}()
	}
	if cfg.NFS.Listen != "" {
		srv := nfs.New(nfs.Config{
			Store:       st,
			Allow:       cfg.NFS.AllowPrefixes(),
			SecurePorts: cfg.NFS.SecurePorts,
			Logger:      log,
		})
		go srv.Preload()
		start(func() error { return srv.ListenAndServe(ctx, cfg.NFS.Listen) })
	}
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		log.Info("bootd stopped")
		return nil
	}
}

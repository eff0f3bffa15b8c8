package nfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	gonfs "github.com/willscott/go-nfs"

	"github.com/bootd/bootd/store"
)

// MOUNT v3 (RFC 1813, appendix I), in go-nfs's vocabulary.
const (
	mntNull    = uint32(gonfs.MountProcNull)
	mntMnt     = uint32(gonfs.MountProcMount)
	mntDump    = uint32(gonfs.MountProcDump)
	mntUmnt    = uint32(gonfs.MountProcUmnt)
	mntUmntall = uint32(gonfs.MountProcUmntAll)
	mntExport  = uint32(gonfs.MountProcExport)

	mnt3OK       = uint32(gonfs.MountStatusOk)
	mnt3ErrNoEnt = uint32(gonfs.MountStatusErrNoEnt)
	mnt3ErrAcces = uint32(gonfs.MountStatusErrAcces)
	mnt3ErrInval = uint32(gonfs.MountStatusErrInval)
)

func (c *call) mount() {
	switch c.h.proc {
	case mntNull, mntUmntall:
		c.ok()
	case mntUmnt:
		p := c.args.opaque(1024)
		if c.args.err != nil {
			c.garbage()
			return
		}
		c.log.Info("unmounted", "path", string(p))
		c.ok()
	case mntDump:
		// bootd keeps no mount list: it would be state a restart loses.
		c.ok()
		c.w.u32(0)
	case mntMnt:
		c.mnt()
	case mntExport:
		c.export()
	default:
		c.procUnavail()
	}
}

func (c *call) mnt() {
	raw := c.args.opaque(1024)
	if c.args.err != nil {
		c.garbage()
		return
	}
	dirpath := string(raw)
	log := c.log.With("path", dirpath)
	if reason := c.s.refuse(c.peer); reason != "" {
		log.Warn("refused mount", "reason", reason)
		c.ok()
		c.w.u32(mnt3ErrAcces)
		return
	}
	name, gen, sub, err := c.s.resolveExport(dirpath)
	if err != nil {
		log.Warn("refused mount", "err", err)
		c.ok()
		if errors.Is(err, store.ErrNotFound) {
			c.w.u32(mnt3ErrNoEnt)
		} else {
			c.w.u32(mnt3ErrInval)
		}
		return
	}
	t, err := c.s.tree(name, gen)
	if err != nil {
		log.Error("refused mount", "image", name, "generation", gen, "err", err)
		c.ok()
		c.w.u32(mnt3ErrNoEnt)
		return
	}
	dir, ok := t.walk(sub)
	if !ok {
		log.Warn("refused mount", "image", name, "generation", gen, "err", "no such directory in the generation")
		c.ok()
		c.w.u32(mnt3ErrNoEnt)
		return
	}
	log.Info("mounted", "image", name, "generation", gen)
	if c.s.cfg.OnMount != nil {
		c.s.cfg.OnMount(c.peer, name, gen)
	}
	c.ok()
	c.w.u32(mnt3OK)
	c.w.opaque(t.handle(dir))
	c.w.u32(1)
	c.w.u32(authUnix)
}

// resolveExport maps a MOUNT path to an image generation and a directory
// inside it: /NAME/GEN[/DIR...], or /NAME and /NAME/current[/DIR...] for
// the generation that is current at this moment.
func (s *Server) resolveExport(p string) (name string, gen int, sub []string, err error) {
	if !strings.HasPrefix(p, "/") {
		return "", 0, nil, fmt.Errorf("export path %q: want /IMAGE or /IMAGE/GENERATION", p)
	}
	parts := strings.Split(strings.Trim(p, "/"), "/")
	name = parts[0]
	if err := store.ValidName(name); err != nil {
		return "", 0, nil, fmt.Errorf("export path %q: %w: %w", p, store.ErrNotFound, err)
	}
	if len(parts) == 1 || parts[1] == "current" {
		gen, err = s.cfg.Store.Current(name)
	} else {
		gen, err = strconv.Atoi(parts[1])
		if err != nil || gen <= 0 || strconv.Itoa(gen) != parts[1] {
			return "", 0, nil, fmt.Errorf("export path %q: %q is not a generation number (want /IMAGE/GENERATION or /IMAGE/current): %w", p, parts[1], store.ErrNotFound)
		}
		err = s.cfg.Store.Has(name, gen)
	}
	if len(parts) > 2 {
		sub = parts[2:]
	}
	return name, gen, sub, err
}

func (c *call) export() {
	c.ok()
	groups := make([]string, len(c.s.cfg.Allow))
	for i, p := range c.s.cfg.Allow {
		groups[i] = p.String()
	}
	names, _ := c.s.cfg.Store.Images()
	for _, n := range names {
		gens, _ := c.s.cfg.Store.Generations(n)
		for _, g := range gens {
			c.w.u32(1)
			c.w.str(fmt.Sprintf("/%s/%d", n, g))
			for _, grp := range groups {
				c.w.u32(1)
				c.w.str(grp)
			}
			c.w.u32(0)
		}
	}
	c.w.u32(0)
}

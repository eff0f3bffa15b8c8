package initrd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// Boot file names in a generation's boot directory.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initrd.img"
)

// ErrDiffers is returned by WriteBootFiles for a boot file that is there
// already with other contents, when it may not replace it.
var ErrDiffers = errors.New("exists and differs from what this bootd generates")

// WriteBootFiles builds the initrd of the image at opt.Root and writes it,
// with a copy of the image's kernel, into dir (a generation's boot
// directory) as InitrdFile and KernelFile. Each file is replaced
// atomically, so a node loading it gets the old or the new one whole. A
// file that differs from the one there is replaced only with replace:
// nodes may be booting this generation right now. The result carries the
// warnings for the admin.
func WriteBootFiles(dir string, opt Options, replace bool) (Result, error) {
	var buf bytes.Buffer
	res, err := Build(&buf, opt)
	if err != nil {
		return res, err
	}
	kernel, err := os.ReadFile(res.Kernel)
	if err != nil {
		return res, fmt.Errorf("reading the image's kernel: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{KernelFile, kernel}, {InitrdFile, buf.Bytes()}} {
		if err := replaceFile(filepath.Join(dir, f.name), f.data, replace); err != nil {
			return res, err
		}
	}
	return res, nil
}

// WriteFile builds the initrd of the image at opt.Root into the file at
// path, replacing it atomically.
func WriteFile(path string, opt Options) (Result, error) {
	var buf bytes.Buffer
	res, err := Build(&buf, opt)
	if err != nil {
		return res, err
	}
	return res, renameio.WriteFile(path, buf.Bytes(), 0o644)
}

func replaceFile(path string, data []byte, replace bool) error {
	if old, err := os.ReadFile(path); err == nil {
		if bytes.Equal(old, data) {
			return nil
		}
		if !replace {
			return fmt.Errorf("%s %w", path, ErrDiffers)
		}
	}
	if err := renameio.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

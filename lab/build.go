package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildBootd builds the bootd command from the module at repo into out:
// static (it is also the nodes' init) and stripped, as the README builds it.
func BuildBootd(repo, out string) error {
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", out, "./cmd/bootd")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building bootd: %v\n%s", err, b)
	}
	return nil
}

// HostKernel returns the newest Debian kernel installed on this machine
// (package linux-image-amd64) and its version.
func HostKernel() (path, version string, err error) {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(m) == 0 {
		return "", "", fmt.Errorf("no /boot/vmlinuz-*: apt-get install linux-image-amd64")
	}
	path = m[len(m)-1]
	return path, filepath.Base(path)[len("vmlinuz-"):], nil
}

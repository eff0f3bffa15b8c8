// Command bootd turns a Linux box into the boot master of a diskless Debian
// cluster. This package only parses the command line and wires the
// packages together; each verb lives in its own file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/initrd/pid1"
	"github.com/bootd/bootd/lograte"
)

type verb struct {
	summary string
	run     func(args []string) error
}

var verbs = map[string]verb{
	"serve":  {"serve images to the cluster: proxy-DHCP, TFTP and NFS as configured", runServe},
	"image":  {"build, list, publish, roll back and remove image generations", runImage},
	"initrd": {"'initrd build' generates a generation's initrd and copies its kernel", runInitrd},
	"lab":    {"a QEMU cluster in network namespaces on this machine: lab up, status, console, down", runLab},
	"nodes":  {"the nodes: 'nodes list' and 'nodes show NODE' from the running bootd; 'nodes export' for the site's DHCP server", runNodes},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: bootd VERB [flags]\n\nVerbs:\n")
	var names []string
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, verbs[n].summary)
	}
	fmt.Fprintf(w, "\nEvery verb takes --config FILE (default %s). Run 'bootd VERB --help' for its flags.\n", config.DefaultPath)
}

func main() {
	// In the initrd, bootd is /init: the multi-call binary puts the node
	// init and the master in one file, so the master needs no toolchain to
	// build initrds.
	if runsAsInit(os.Getpid(), os.Args) {
		pid1.Main()
	}
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if isHelp(name) {
		usage(os.Stdout)
		return
	}
	v, ok := verbs[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "bootd: unknown verb %q\n\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	if err := v.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "bootd %s: %v\n", name, err)
		os.Exit(1)
	}
}

// runsAsInit says whether bootd was started as a node's init: PID 1, named
// init (the kernel runs the initramfs's /init), and given no verb. PID 1
// alone is also a master in a container, and a host is no place for the
// node init, which takes over the network and reboots when it fails. The
// kernel hands init the command-line words it did not understand, so
// arguments other than a verb do not say anything.
func runsAsInit(pid int, args []string) bool {
	if pid != 1 || len(args) == 0 || filepath.Base(args[0]) != "init" {
		return false
	}
	if len(args) > 1 {
		if _, ok := verbs[args[1]]; ok || isHelp(args[1]) {
			return false
		}
	}
	return true
}

func isHelp(arg string) bool { return arg == "-h" || arg == "--help" || arg == "help" }

// common holds the flags every verb takes.
type common struct {
	configPath string
	logLevel   string
	logs       *lograte.Handler // set by load
}

func newFlags(verbName, argsUsage, summary string, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet("bootd "+verbName, flag.ContinueOnError)
	fs.StringVar(&c.configPath, "config", config.DefaultPath, "config `FILE`")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bootd %s [flags] %s\n\n%s\n\nFlags:\n", verbName, argsUsage, summary)
		fs.PrintDefaults()
	}
	return fs
}

func (c *common) load() (*config.Config, *slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(c.logLevel))); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	// Bounded per client and in total: every service logs per request,
	// and any client on the cluster network may be hostile.
	c.logs = lograte.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}), lograte.Limits{})
	log := slog.New(c.logs)
	cfg, err := config.Load(c.configPath)
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return pos, nil
}

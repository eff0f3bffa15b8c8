// Command bootd turns a Linux box into the boot master of a diskless Debian
// cluster. This package only parses the command line (one cobra command
// tree, so every verb takes its flags, help, completion and man page the
// same way) and wires the packages together; each verb lives in its own
// file.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/initrd/pid1"
	"github.com/bootd/bootd/lograte"
)

// Exit codes: scripts tell a mistyped command line from a failure.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	// In the initrd, bootd is /init: the multi-call binary puts the node
	// init and the master in one file, so the master needs no toolchain to
	// build initrds.
	if runsAsInit(os.Getpid(), os.Args) {
		pid1.Main()
	}
	os.Exit(run(newRoot(&app{}), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line of the tree root and returns the exit
// code: 0, exitUsage with the command's usage on stderr for a command line
// bootd cannot take, exitFailure with "bootd VERB: error" for anything
// that went wrong after.
func run(root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	if cmd == nil {
		cmd = root
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: %v\n\n%s", cmd.CommandPath(), ue.err, cmd.UsageString())
		return exitUsage
	}
	// The error that ends bootd is the one "journalctl -p err" must find.
	prio := ""
	if f, ok := stderr.(*os.File); ok && underJournal(os.Getenv("JOURNAL_STREAM"), f) {
		prio = priority(slog.LevelError)
	}
	fmt.Fprintf(stderr, "%s%s: %v\n", prio, cmd.CommandPath(), err)
	return exitFailure
}

// usageError is a command line bootd cannot take: an unknown verb or flag,
// a bad flag value, the wrong number of arguments.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// app holds what the root's flags set for every verb.
type app struct {
	configPath string
	logLevel   string
	logFormat  string
	log        *slog.Logger
	logs       *lograte.Handler // bounds what clients can make bootd log
}

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "bootd",
		Short: "the boot master of a diskless Debian cluster",
		Long: `bootd turns a Linux box into the boot master of a diskless Debian cluster:
proxy or full DHCP, TFTP, HTTP boot, a read-only NFSv3 server for the root
file system, the initramfs whose init is bootd itself, and Debian image
generations built with mmdebstrap.

Exit status: 0 on success, 1 when a command fails, 2 for a command line
bootd cannot take (unknown verb or flag, bad value, wrong arguments).`,
		Version:       versionString(),
		SilenceErrors: true,
		SilenceUsage:  true,
		// Logging is set up here, before a verb runs and never for
		// --help: help reads nothing.
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			a.setupLog(os.Stderr)
			return nil
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", config.DefaultPath, "the config `FILE` (lab verbs do not read it)")
	a.logLevel, a.logFormat = "info", "text"
	choiceVar(root, pf, &a.logLevel, "log-level", "least severe log level written", "debug", "info", "warn", "error")
	choiceVar(root, pf, &a.logFormat, "log-format", "log lines as slog text or JSON", "text", "json")
	root.MarkPersistentFlagFilename("config", "yaml", "yml")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	root.AddCommand(newServeCmd(a), newImageCmd(a), newInitrdCmd(a), newNodesCmd(a), newLabCmd(),
		newConfigCmd(a), newVersionCmd(), newGenDocsCmd(root))
	root.InitDefaultCompletionCmd()
	strictArgs(root)
	// After strictArgs: "bootd help VERB..." takes any words, and says
	// when they name no verb.
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [VERB...]",
		Short: "help about any verb, as VERB --help gives it",
		RunE: func(_ *cobra.Command, args []string) error {
			cmd, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("no verb %q", strings.Join(args, " "))
			}
			return cmd.Help()
		},
	})
	return root
}

// strictArgs makes every wrong argument count a usage error (a verb's
// Args also checks its flags' values against each other: Args runs before
// anything else of the verb), and a verb
// that only groups others (image, nodes) refuse a word it does not know
// instead of printing help and succeeding. Its help can still be asked for
// as "bootd VERB help".
func strictArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictArgs(sub)
	}
	if c.HasAvailableSubCommands() && c.RunE == nil && c.Run == nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && args[0] == "help" {
				return nil
			}
			return cobra.NoArgs(cmd, args)
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return cmd.Help()
			}
			return usagef("name a verb")
		}
	}
	check := c.Args
	if check == nil {
		check = noArgs
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q: %s takes none", args[0], cmd.CommandPath())
	}
	return nil
}

// choice is a flag value that must be one of a fixed set: a wrong value is
// a usage error at parse time, and completion offers the set.
type choice struct {
	p       *string
	allowed []string
}

func (c choice) String() string { return *c.p }
func (c choice) Type() string   { return strings.Join(c.allowed, "|") }
func (c choice) Set(s string) error {
	if !slices.Contains(c.allowed, s) {
		return fmt.Errorf("want %s", strings.Join(c.allowed, ", "))
	}
	*c.p = s
	return nil
}

// choiceVar defines a choice flag on fs (a flag set of cmd); *p holds the
// default.
func choiceVar(cmd *cobra.Command, fs *pflag.FlagSet, p *string, name, usage string, allowed ...string) {
	fs.Var(choice{p, allowed}, name, usage)
	cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(allowed, cobra.ShellCompDirectiveNoFileComp))
}

// config reads and validates the config file the command line names.
func (a *app) config() (*config.Config, error) {
	return config.Load(a.configPath)
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
		switch args[1] {
		case "-h", "--help", "--version":
			return false
		}
		for _, c := range newRoot(&app{}).Commands() {
			if c.Name() == args[1] {
				return false
			}
		}
	}
	return true
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

func newConfigCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "check the config file",
	}
	c.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "validate the config file and print the effective config",
		Long: `Read and validate the config file (--config), then print the config bootd
would run with, every default filled in, as YAML on standard output. A
config that is not valid is reported as FILE:LINE: KEY: problem, and bootd
exits 1. Warnings (settings that are valid but probably not what was
meant) go to standard error.`,
		Example: "  bootd config check --config /etc/bootd/bootd.yaml",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			// Warnings is the config package's, where it has one.
			if w, ok := any(cfg).(interface{ Warnings() []string }); ok {
				for _, s := range w.Warnings() {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: %s\n", cfg.Path, s)
				}
			}
			b, err := yaml.Marshal(cfg)
			if err != nil {
				return fmt.Errorf("printing the effective config: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# %s: valid; the effective config, defaults filled in\n", cfg.Path)
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	})
	return c
}

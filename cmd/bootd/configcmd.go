package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/bootd/bootd/config"
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
			for _, s := range cfg.Warnings() {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", s)
			}
			// Valid for every verb, yet not enough to serve (a fresh
			// install's file): said, not failed, so image build and
			// nodes export can be run before the cluster NIC is chosen.
			if err := cfg.CheckServe(); err != nil {
				for _, s := range strings.Split(err.Error(), "\n") {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: bootd serve would refuse: %s\n", s)
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# %s: valid; the effective config, defaults filled in\n", cfg.Path)
			return writeEffective(out, cfg)
		},
	})
	return c
}

// writeEffective writes cfg as YAML a config file can hold.
func writeEffective(w io.Writer, cfg *config.Config) error {
	var doc yaml.Node
	if err := doc.Encode(cfg); err != nil {
		return fmt.Errorf("printing the effective config: %w", err)
	}
	dropNulls(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("printing the effective config: %w", err)
	}
	return enc.Close()
}

// dropNulls removes the keys whose value is null (an optional section not
// set, such as image.nis): left out, they mean the same, while "null"
// is a value the config does not take.
func dropNulls(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind != yaml.ScalarNode || v.Tag != "!!null" {
				kept = append(kept, n.Content[i], v)
			}
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		dropNulls(c)
	}
}

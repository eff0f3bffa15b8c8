package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenDocsCmd writes the man pages and the bash completion the Debian
// package ships (scripts/package.sh runs it), from the same command tree
// and texts as --help.
func newGenDocsCmd(root *cobra.Command) *cobra.Command {
	var manDir, complDir string
	c := &cobra.Command{
		Use:    "gen-docs --man DIR [--completion DIR]",
		Short:  "write the man pages bootd(8), bootd-VERB(8) and the bash completion",
		Hidden: true,
		Long: `Write the man pages (section 8: bootd.8 and one bootd-VERB.8 per verb) into
the --man directory and the bash completion script (named bootd) into the
--completion directory. The date in the pages is SOURCE_DATE_EPOCH when set,
so a package build is reproducible.`,
		Args: cobra.MatchAll(noArgs, func(cmd *cobra.Command, args []string) error {
			if manDir == "" && complDir == "" {
				return errors.New("name --man DIR, --completion DIR or both")
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			if manDir != "" {
				if err := os.MkdirAll(manDir, 0o755); err != nil {
					return err
				}
				root.DisableAutoGenTag = true
				hdr := &doc.GenManHeader{Section: "8", Source: versionString(), Manual: "bootd manual"}
				if err := doc.GenManTree(root, hdr, manDir); err != nil {
					return fmt.Errorf("writing the man pages into %s: %w", manDir, err)
				}
			}
			if complDir != "" {
				if err := os.MkdirAll(complDir, 0o755); err != nil {
					return err
				}
				f, err := renameio.NewPendingFile(filepath.Join(complDir, "bootd"), renameio.WithPermissions(0o644))
				if err != nil {
					return err
				}
				defer f.Cleanup()
				if err := root.GenBashCompletionV2(f, true); err != nil {
					return fmt.Errorf("writing the bash completion: %w", err)
				}
				return f.CloseAtomicallyReplace()
			}
			return nil
		},
	}
	c.Flags().StringVar(&manDir, "man", "", "write the man pages into `DIR`")
	c.Flags().StringVar(&complDir, "completion", "", "write the bash completion (file bootd) into `DIR`")
	c.MarkFlagDirname("man")
	c.MarkFlagDirname("completion")
	return c
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootd/bootd/config"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/web"
)

func newNodesCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "nodes",
		Short: "the nodes: list and show them from the running bootd; export and import them for the site's DHCP server",
	}
	c.AddCommand(a.nodesListCmd(), a.nodesShowCmd(), a.nodesExportCmd(), a.nodesImportCmd())
	return c
}

func (a *app) nodesExportCmd() *cobra.Command {
	format := "isc"
	var o nodes.ExportOptions
	var output, block string
	c := &cobra.Command{
		Use:   "export",
		Short: "write the node table as host entries for the site's DHCP server",
		Long: `Write the node table (nodes: in the config) as host entries for the site's
DHCP server, so admins keep their DHCP server and bootd answers PXE as a
proxy. Without --output or --block the entries go to standard output.

Both --output and --block can be run again after every edit of the node
table: --output FILE rewrites a file of bootd's own that the DHCP server
includes once (dhcpd: include "FILE"; dnsmasq: conf-file=FILE; Kea:
"reservations": <?include "FILE"?> in a subnet4), --block FILE replaces
the block between bootd's markers in the DHCP server's own file (dhcpd.conf
or dnsmasq.conf; not Kea's JSON) or appends one. Files are replaced
atomically, keep their owner and mode, and are left alone when unchanged.`,
		Example: `  bootd nodes export --format isc --output /etc/dhcp/bootd-nodes.conf
  bootd nodes export --format dnsmasq --block /etc/dnsmasq.d/cluster.conf
  bootd nodes export --format kea --output /etc/kea/bootd-nodes.json`,
		Args: cobra.MatchAll(noArgs, func(cmd *cobra.Command, args []string) error {
			if output != "" && block != "" {
				return usagef("--output and --block: give one")
			}
			if err := o.Validate(); err != nil {
				return usagef("%v", err)
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			t := cfg.Table()
			var changed bool
			switch {
			case output != "":
				changed, err = t.ExportFile(output, format, o)
			case block != "":
				changed, err = t.ExportBlock(block, format, o)
			default:
				return t.Export(cmd.OutOrStdout(), format, o)
			}
			if err != nil {
				return err
			}
			what := "unchanged"
			if changed {
				what = "written; reload the DHCP server"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d nodes, %s\n", output+block, len(cfg.Nodes), what)
			return nil
		},
	}
	fs := c.Flags()
	choiceVar(c, fs, &format, "format", "output format", nodes.Formats...)
	fs.StringVar(&o.NextServer, "next-server", "", "add next-server (the TFTP server's IPv4 `IP`) to each entry")
	fs.StringVar(&o.Filename, "filename", "", "add the boot `FILE` name to each entry")
	fs.StringVar(&output, "output", "", "write the entries to `FILE`, for the DHCP server to include")
	fs.StringVar(&block, "block", "", "replace bootd's marked block in `FILE` (dhcpd.conf, dnsmasq.conf), or append one")
	return c
}

func (a *app) nodesImportCmd() *cobra.Command {
	format := "isc"
	var merge bool
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "read the host entries of a dhcpd.conf into the node table",
		Long: `Read ISC dhcpd's host entries (host NAME { hardware ethernet ...;
fixed-address ...; option host-name ...; }, in groups, subnets and
shared networks too) from FILE ("-" for standard input) and print them as
the nodes: list of bootd.yaml, or with --merge add them to the config file
(--config), keeping its comments: a MAC already listed gets the host's name
and address and keeps its image. What the node table has no place for is
listed on standard error with its line; a MAC, name or address given twice
is an error naming both hosts.`,
		Example: `  bootd nodes import --format isc /etc/dhcp/dhcpd.conf
  bootd nodes import --format isc /etc/dhcp/dhcpd.conf --merge --config /etc/bootd/bootd.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := importISC(args[0], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if !merge {
				out, err := nodes.NodesYAML(list)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			return mergeNodes(a.configPath, list, cmd.OutOrStdout())
		},
	}
	choiceVar(c, c.Flags(), &format, "format", "the DHCP server's config format", "isc")
	c.Flags().BoolVar(&merge, "merge", false, "add the nodes to the config file instead of printing them")
	return c
}

func importISC(path string, warnings io.Writer) ([]nodes.Node, error) {
	r := io.Reader(os.Stdin)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	list, warns, err := nodes.ImportISC(r)
	for _, w := range warns {
		fmt.Fprintf(warnings, "%s: warning: %s\n", path, w)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return list, nil
}

// mergeNodes adds list to the config file at path, and writes it only if
// the result is a valid config: an import never leaves bootd unable to
// start.
func mergeNodes(path string, list []nodes.Node, out io.Writer) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the config to merge into: %w", err)
	}
	merged, err := nodes.MergeYAML(old, list)
	if err != nil {
		return fmt.Errorf("merging into %s: %w", path, err)
	}
	if _, err := config.Parse(path, merged); err != nil {
		return fmt.Errorf("the merged config would not be valid, %s left as it was: %w", path, err)
	}
	changed, err := nodes.WriteFile(path, merged)
	if err != nil {
		return err
	}
	what := "unchanged"
	if changed {
		what = "merged; bootd serve applies it on reload (systemctl reload bootd)"
	}
	fmt.Fprintf(out, "%s: %d nodes %s\n", path, len(list), what)
	return nil
}

// apiClient reaches the bootd that runs with this config.
func (a *app) apiClient() (*web.Client, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	if cfg.HTTP.Listen == "" {
		return nil, fmt.Errorf("%s: http.listen is off, so bootd serves no API to ask", cfg.Path)
	}
	return web.ClientFor(cfg.HTTP.Listen)
}

func (a *app) nodesListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "every node with the stage of its latest boot, from the running bootd",
		Long: `Print every node (the node table's and any other bootd has seen) with the
stage of its latest boot, read from the running bootd's API (http.listen).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.apiClient()
			if err != nil {
				return err
			}
			l, err := cl.Nodes(context.Background())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(l)
			}
			printList(os.Stdout, l)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return c
}

func printList(w io.Writer, l web.NodeList) {
	var counts []string
	for _, s := range append(append([]events.Stage(nil), events.Stages...), web.StageUnseen) {
		if n := l.Counts[s]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", s, n))
		}
	}
	fmt.Fprintf(w, "%d nodes: %s\n", len(l.Nodes), strings.Join(counts, ", "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOSTNAME\tMAC\tIP\tFIRMWARE\tIMAGE\tSTAGE\tSINCE\tLAST BOOT\tLAST LINE")
	for _, n := range l.Nodes {
		img := "-"
		if n.Image != "" {
			img = fmt.Sprintf("%s/%d", n.Image, n.Generation)
		}
		since, boot := "-", "-"
		if !n.Since.IsZero() {
			since = ago(l.Now.Sub(n.Since))
		}
		if n.LastBootSeconds > 0 {
			boot = fmt.Sprintf("%.1fs", n.LastBootSeconds)
		}
		line := n.LastLine.Text
		if len(line) > 60 {
			line = line[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(n.Hostname), n.MAC, dash(n.IP), dash(n.Firmware), img, n.Stage, since, boot, line)
	}
	tw.Flush()
}

func (a *app) nodesShowCmd() *cobra.Command {
	var asJSON bool
	var lines int
	c := &cobra.Command{
		Use:   "show NODE",
		Short: "one node (hostname, MAC or IP): its boots, plan, console and syslog",
		Long: `Print one node (hostname, MAC or IP), read from the running bootd's API: its
latest boots stage by stage, its boot plan, and the tail of its console and
syslog.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.apiClient()
			if err != nil {
				return err
			}
			d, err := cl.Node(context.Background(), args[0])
			if errors.Is(err, web.ErrNoNode) {
				return fmt.Errorf("no node %q: not in the node table, and bootd has not seen it", args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(d)
			}
			printNode(os.Stdout, d, lines)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	c.Flags().IntVar(&lines, "lines", 20, "console and syslog lines to print")
	return c
}

func printNode(w io.Writer, d web.NodeDetail, lines int) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "hostname\t%s\nmac\t%s\nip\t%s\nfirmware\t%s\n", dash(d.Hostname), d.MAC, dash(d.IP), dash(d.Firmware))
	if d.Image != "" {
		fmt.Fprintf(tw, "runs\t%s/%d\n", d.Image, d.Generation)
	}
	fmt.Fprintf(tw, "stage\t%s", d.Stage)
	if !d.Since.IsZero() {
		fmt.Fprintf(tw, " since %s (%s ago)", d.Since.Local().Format(time.DateTime), ago(time.Since(d.Since)))
	}
	fmt.Fprintln(tw)
	if d.Plan.Error != "" {
		fmt.Fprintf(tw, "plan\t%s\n", d.Plan.Error)
	} else {
		fmt.Fprintf(tw, "plan\t%s/%d\nkernel\t%s\ninitrd\t%s\ncmdline\t%s\n", d.Plan.Image, d.Plan.Generation, d.Plan.Kernel, d.Plan.Initrd, d.Plan.Cmdline)
	}
	tw.Flush()
	for i := len(d.Boots) - 1; i >= 0; i-- {
		b := d.Boots[i]
		what := "boot"
		if i == len(d.Boots)-1 {
			what = "latest boot"
		}
		fmt.Fprintf(w, "\n%s, %s:\n", what, b.Start.Local().Format(time.DateTime))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, a := range b.Stages {
			fmt.Fprintf(tw, "  %s\t+%.1fs\t%s\n", a.Stage, a.Time.Sub(b.Start).Seconds(), a.Detail)
		}
		tw.Flush()
	}
	tail := func(title string, ls []events.Line) {
		if len(ls) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s (last %d of %d):\n", title, min(lines, len(ls)), len(ls))
		for _, l := range ls[max(0, len(ls)-lines):] {
			fmt.Fprintf(w, "  %s  %s\n", l.Time.Local().Format(time.TimeOnly), l.Text)
		}
	}
	tail("console", d.Console)
	tail("syslog", d.Syslog)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago writes a duration as people read it in a table.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

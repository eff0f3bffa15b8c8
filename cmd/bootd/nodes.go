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

	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
	"github.com/bootd/bootd/web"
)

func newNodesCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "nodes",
		Short: "the nodes: list and show them from the running bootd; export them for the site's DHCP server",
	}
	c.AddCommand(a.nodesListCmd(), a.nodesShowCmd(), a.nodesExportCmd())
	return c
}

func (a *app) nodesExportCmd() *cobra.Command {
	format := "isc"
	var o nodes.ExportOptions
	c := &cobra.Command{
		Use:   "export",
		Short: "print the node table as host entries for the site's DHCP server",
		Long: `Print the node table (nodes: in the config) as host entries for the site's
DHCP server, so admins keep their DHCP server and bootd answers PXE as a
proxy.`,
		Example: "  bootd nodes export --format dnsmasq --config /etc/bootd/bootd.yaml",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			return cfg.Table().Export(os.Stdout, format, o)
		},
	}
	fs := c.Flags()
	choiceVar(c, fs, &format, "format", "output format", nodes.Formats...)
	fs.StringVar(&o.NextServer, "next-server", "", "add next-server (the TFTP server's `IP`) to each entry")
	fs.StringVar(&o.Filename, "filename", "", "add the boot `FILE` name to each entry")
	return c
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

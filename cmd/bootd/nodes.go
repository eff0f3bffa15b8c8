package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/bootd/bootd/nodes"
)

func runNodes(args []string) error {
	if len(args) == 0 || args[0] != "export" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Println("Usage: bootd nodes export [flags]\n\nPrint the node table as host entries for the site's DHCP server.")
			return nil
		}
		return errors.New("usage: bootd nodes export --format isc|dnsmasq|kea [--next-server IP --filename FILE]")
	}
	var c common
	fs := newFlags("nodes export", "", "Print the node table as host entries for the site's DHCP server, so\nadmins keep their DHCP server and bootd answers PXE as a proxy.", &c)
	format := fs.String("format", "isc", "output format: "+strings.Join(nodes.Formats, ", "))
	next := fs.String("next-server", "", "add next-server (the TFTP server) to each entry")
	file := fs.String("filename", "", "add the boot file name to each entry")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, _, err := c.load()
	if err != nil {
		return err
	}
	return cfg.Table().Export(os.Stdout, *format, nodes.ExportOptions{NextServer: *next, Filename: *file})
}

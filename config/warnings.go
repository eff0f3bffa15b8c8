package config

import (
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Warnings lists what the file sets that bootd will not use, each as
// "file:line: key: why": valid values that the rest of the config makes
// pointless, such as full-mode DHCP keys under dhcp.mode: proxy. The admin
// who set them expects them to matter. A key left at its default is not
// named, so the output of `bootd config check`, read back, warns the same.
func (c *Config) Warnings() []string { return c.warnings }

// CheckServe says what `bootd serve` needs that the file leaves out, one
// "file:line: key: ..." line each: the cluster NIC, and the networks that
// may mount images. A fresh install's config lacks both and is still valid
// for the verbs that need neither (image build, nodes export, config check).
func (c *Config) CheckServe() error {
	var errs []error
	for _, p := range c.serveProblems {
		errs = append(errs, errors.New(p))
	}
	return errors.Join(errs...)
}

// checkUse fills c.warnings and c.serveProblems. It runs after validation,
// on values in their effective form; where(key) gives "file:line: key".
func (c *Config) checkUse(where func(key string) string) {
	c.warnings, c.serveProblems = nil, nil
	warn := func(key, why string) { c.warnings = append(c.warnings, where(key)+": "+why) }

	if c.NFS.Listen != "" && len(c.NFS.Allow) == 0 {
		c.serveProblems = append(c.serveProblems, where("nfs.allow")+`: list the client networks that may mount images, e.g. ["10.0.0.0/24"] (or nfs.listen: "" for no NFS)`)
	}
	if needIface := c.DHCP.Mode != "off" || (c.TFTP.Listen != "" && !c.address.IsValid()); needIface && c.Interface == "" {
		c.serveProblems = append(c.serveProblems, where("interface")+`: name the cluster NIC, e.g. eth1 (DHCP and TFTP answer on it); or set dhcp.mode: off and tftp.listen: ""`)
	}

	def := Default()
	type kv struct {
		key  string
		v, d any // the value, and the default: a default is no sign of intent
	}
	ignored := func(section string, keys []kv, why string) {
		for _, k := range keys {
			if !reflect.DeepEqual(k.v, k.d) {
				warn(section+"."+k.key, "ignored: "+why)
			}
		}
	}
	d := c.DHCP
	if d.Mode != "full" {
		ignored("dhcp", []kv{{"subnet", d.Subnet, ""}, {"router", d.Router, ""}, {"dns", len(d.DNS), 0}, {"domain", d.Domain, ""},
			{"lease_time", d.LeaseTime, ""}, {"range", len(d.Range), 0}},
			fmt.Sprintf("only dhcp.mode: full uses it, and dhcp.mode is %s", d.Mode))
	}
	if d.Mode == "off" {
		ignored("dhcp", []kv{{"relays", len(d.Relays), 0}, {"ipv6_ra", d.IPv6RA, false}}, "dhcp.mode is off")
	}
	off := func(section string) string {
		return fmt.Sprintf(`%s.listen is "", which turns %s off`, section, section)
	}
	if n, dn := c.NFS, def.NFS; n.Listen == "" {
		keys := []kv{{"secure_ports", n.SecurePorts, dn.SecurePorts}, {"max_connections", n.MaxConnections, dn.MaxConnections},
			{"max_connections_per_client", n.MaxConnectionsPerClient, dn.MaxConnectionsPerClient},
			{"squash_unknown", n.SquashUnknown, dn.SquashUnknown}, {"record", n.Record, dn.Record}}
		// http.allow defaults to nfs.allow, which serves then with NFS off.
		if c.HTTP.Listen == "" || c.httpAllowGiven {
			keys = append(keys, kv{"allow", len(n.Allow), 0})
		}
		ignored("nfs", keys, off("nfs"))
	}
	if t, dt := c.TFTP, def.TFTP; t.Listen == "" {
		defPoll, _ := time.ParseDuration(dt.BusyPoll)
		ignored("tftp", []kv{{"busy_poll", t.busyPoll, defPoll}, {"max_transfers", t.MaxTransfers, dt.MaxTransfers},
			{"max_transfers_per_client", t.MaxTransfersPerClient, dt.MaxTransfersPerClient},
			{"requests_per_second", t.RequestsPerSecond, dt.RequestsPerSecond}}, off("tftp"))
	}
	if s, ds := c.Syslog, def.Syslog; s.Listen == "" {
		ignored("syslog", []kv{{"allow", len(s.Allow), 0}, {"max_file_mb", s.MaxFileMB, ds.MaxFileMB}}, off("syslog"))
	}
	if h := c.HTTP; h.Listen == "" {
		ignored("http", []kv{{"allow", c.httpAllowGiven, false}}, off("http"))
		if h.Boot == "ipxe" {
			warn("http.boot", `ignored: http.listen is "", so every node boots over TFTP (as with http.boot: off)`)
		}
	}
	if c.UnknownNodes == "ignore" && c.Defaults.Image != "" && len(c.Nodes) > 0 {
		for _, n := range c.Nodes {
			if n.Image == "" {
				return
			}
		}
		warn("defaults.image", "boots no node: every node in the table names its own image, and unknown_nodes is ignore")
	}
}

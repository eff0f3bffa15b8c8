package nodes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netns"
)

// TestDnsmasqNextServerWithoutFile runs a real dnsmasq on the dnsmasq
// export and asks it for an offer over a veth pair: a table node gets its
// fixed address and the next-server in siaddr even with no boot file (the
// `dhcp-boot=tag:bootd,,,IP` form), and a client outside the table gets
// neither siaddr nor file, since the boot options are tagged to the
// table's hosts.
func TestDnsmasqNextServerWithoutFile(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root, network namespaces and dnsmasq: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Fatal("dnsmasq not installed (dnsmasq-base): scripts/deps.sh installs it")
	}
	const node, stranger = "52:54:00:bd:0e:01", "52:54:00:bd:0e:02"
	tb, err := NewTable([]Node{{MAC: node, Hostname: "n1", IP: "10.215.0.11"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, wantFile string }{{"", ""}, {"pxelinux.0", "pxelinux.0"}} {
		t.Run("file="+tc.file, func(t *testing.T) {
			var b bytes.Buffer
			if err := tb.Export(&b, "dnsmasq", ExportOptions{NextServer: "10.215.0.5", Filename: tc.file}); err != nil {
				t.Fatal(err)
			}
			srv, cli := vethPair(t)
			dir := t.TempDir()
			conf := filepath.Join(dir, "dnsmasq.conf")
			site := "port=0\ninterface=d0\nbind-interfaces\ndhcp-range=10.215.0.100,10.215.0.150,1h\n" +
				"dhcp-leasefile=" + filepath.Join(dir, "leases") + "\n"
			if err := os.WriteFile(conf, []byte(site+b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("ip", "netns", "exec", srv, dnsmasq, "--keep-in-foreground", "--conf-file="+conf, "--pid-file=", "--user=root")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

			offer := discover(t, cli, node)
			if offer == nil {
				t.Fatalf("no offer for the table's node; dnsmasq said:\n%s", out.String())
			}
			if offer.YourIPAddr.String() != "10.215.0.11" || offer.ServerIPAddr.String() != "10.215.0.5" || offer.BootFileName != tc.wantFile {
				t.Errorf("table node's offer: yiaddr %s siaddr %s file %q, want 10.215.0.11, 10.215.0.5, %q",
					offer.YourIPAddr, offer.ServerIPAddr, offer.BootFileName, tc.wantFile)
			}
			offer = discover(t, cli, stranger)
			if offer == nil {
				t.Fatalf("no offer for a client outside the table; dnsmasq said:\n%s", out.String())
			}
			if offer.ServerIPAddr.String() == "10.215.0.5" || offer.BootFileName != "" {
				t.Errorf("a client outside the table got the boot options: siaddr %s file %q", offer.ServerIPAddr, offer.BootFileName)
			}
		})
	}
}

// vethPair makes two namespaces joined by a veth pair: the server's side
// "d0" (10.215.0.1/24) and the client's side "d1".
func vethPair(t *testing.T) (srv, cli string) {
	t.Helper()
	srv, cli = fmt.Sprintf("bdn%d-s", os.Getpid()), fmt.Sprintf("bdn%d-c", os.Getpid())
	sh(t, "ip", "netns", "add", srv)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", srv).Run() })
	sh(t, "ip", "netns", "add", cli)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", cli).Run() })
	sh(t, "ip", "-n", srv, "link", "add", "d0", "type", "veth", "peer", "name", "d1", "netns", cli)
	sh(t, "ip", "-n", srv, "addr", "add", "10.215.0.1/24", "dev", "d0")
	sh(t, "ip", "-n", srv, "link", "set", "d0", "up")
	sh(t, "ip", "-n", cli, "link", "set", "d1", "up")
	return srv, cli
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v %s", args, err, out)
	}
}

// discover sets d1's MAC in the namespace cli and returns the offer a
// DISCOVER from it gets (nil if none).
func discover(t *testing.T, cli, mac string) *dhcpv4.DHCPv4 {
	t.Helper()
	sh(t, "ip", "-n", cli, "link", "set", "d1", "address", mac)
	var offer *dhcpv4.DHCPv4
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The client's socket must be made in cli; the thread is never
		// unlocked, so it dies with the goroutine instead of going back
		// to the pool inside the namespace.
		runtime.LockOSThread()
		ns, err := netns.GetFromPath("/run/netns/" + cli)
		if err == nil {
			err = netns.Set(ns)
			ns.Close()
		}
		if err != nil {
			t.Errorf("entering netns %s: %v", cli, err)
			return
		}
		c, err := nclient4.New("d1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		if err != nil {
			t.Errorf("dhcp client: %v", err)
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		offer, err = c.DiscoverOffer(ctx)
		if err != nil {
			t.Logf("discover from %s: %v", mac, err)
		}
	}()
	<-done
	return offer
}

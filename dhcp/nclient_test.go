package dhcp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/boot"
	"github.com/bootd/bootd/events"
	"github.com/bootd/bootd/nodes"
)

// netnsPair makes two namespaces joined by a veth pair: bootd's side "d0"
// (10.214.0.1/24) and the client's side "d1" with the given MAC.
func netnsPair(t *testing.T, mac string) (srv, cli string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root and network namespaces: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	srv, cli = fmt.Sprintf("bdd%d-s", os.Getpid()), fmt.Sprintf("bdd%d-c", os.Getpid())
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	sh("ip", "netns", "add", srv)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", srv).Run() })
	sh("ip", "netns", "add", cli)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", cli).Run() })
	sh("ip", "-n", srv, "link", "add", "d0", "type", "veth", "peer", "name", "d1", "netns", cli)
	sh("ip", "-n", srv, "addr", "add", "10.214.0.1/24", "dev", "d0")
	sh("ip", "-n", srv, "link", "set", "d0", "up")
	sh("ip", "-n", cli, "link", "set", "d1", "address", mac)
	sh("ip", "-n", cli, "link", "set", "d1", "up")
	sh("ip", "-n", cli, "link", "set", "lo", "up")
	return srv, cli
}

// inNetns runs f on an OS thread that has entered the namespace; sockets
// made there stay in it.
func inNetns(t *testing.T, name string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("open netns: %v", err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		f()
	}()
	<-done
}

// serveIn opens ports 67 and 4011 on d0 in the namespace ns and runs serve
// on them; the channel gets what serve returned.
func serveIn(t *testing.T, ns string, serve func(c67, c4011 net.PacketConn) error) <-chan error {
	served := make(chan error, 1)
	inNetns(t, ns, func() {
		conns, err := openConns("d0")
		if err != nil {
			t.Error(err)
			served <- err
			return
		}
		go func() { served <- serve(conns[0], conns[1]) }()
	})
	return served
}

func pxeMods(a iana.Arch) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:003016", a))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(a)),
	}
}

func planner(t *testing.T) *boot.Planner {
	table, err := nodes.NewTable([]nodes.Node{{MAC: "52:54:00:bd:00:01", Hostname: "n1", IP: "10.214.0.11"}})
	if err != nil {
		t.Fatal(err)
	}
	return boot.NewPlanner(boot.Options{Nodes: table})
}

// TestNClient4Proxy: insomniacslk's client, over a real interface, gets a
// proxy offer with no address and the BIOS loader.
func TestNClient4Proxy(t *testing.T) {
	srvNS, cliNS := netnsPair(t, "52:54:00:bd:00:01")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs := events.New(16)
	p := NewProxy(Config{Interface: "d0", Planner: planner(t), Events: evs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	p.cfg.ServerIP = netip.MustParseAddr("10.214.0.1")
	served := serveIn(t, srvNS, func(c67, c4011 net.PacketConn) error { return serveConns(ctx, p.log, p.Reply, c67, c4011) })
	var offer *dhcpv4.DHCPv4
	var err error
	inNetns(t, cliNS, func() {
		c, cerr := nclient4.New("d1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
		if cerr != nil {
			err = cerr
			return
		}
		defer c.Close()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		offer, err = c.DiscoverOffer(cctx, pxeMods(iana.INTEL_X86PC)...)
	})
	if err != nil {
		t.Fatalf("nclient4 got no offer: %v", err)
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "pxelinux.0" || offer.ServerIdentifier().String() != "10.214.0.1" || offer.ClassIdentifier() != "PXEClient" {
		t.Errorf("proxy offer: %s", offer.Summary())
	}
	cancel()
	<-served
}

// TestNClient4Full: a whole DORA with nclient4 against full mode.
func TestNClient4Full(t *testing.T) {
	srvNS, cliNS := netnsPair(t, "52:54:00:bd:00:01")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := NewFull(FullConfig{
		Config:    Config{Interface: "d0", ServerIP: netip.MustParseAddr("10.214.0.1"), Planner: planner(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Network:   Network{Subnet: netip.MustParsePrefix("10.214.0.0/24"), LeaseTime: time.Hour},
		LeaseFile: t.TempDir() + "/leases.json",
	})
	if err != nil {
		t.Fatal(err)
	}
	served := serveIn(t, srvNS, func(c67, c4011 net.PacketConn) error { return f.serve(ctx, c67, c4011) })
	var lease *nclient4.Lease
	inNetns(t, cliNS, func() {
		c, cerr := nclient4.New("d1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
		if cerr != nil {
			err = cerr
			return
		}
		defer c.Close()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		lease, err = c.Request(cctx, pxeMods(iana.EFI_X86_64)...)
	})
	if err != nil {
		t.Fatalf("nclient4 DORA: %v", err)
	}
	if ack := lease.ACK; ack.YourIPAddr.String() != "10.214.0.11" || ack.BootFileName != "syslinux.efi" || ack.HostName() != "n1" {
		t.Errorf("ACK: %s", ack.Summary())
	}
	if ls := f.Leases(); len(ls) != 1 || ls[0].IP.String() != "10.214.0.11" {
		t.Errorf("leases %+v", ls)
	}
	cancel()
	<-served
	// The flusher wrote the lease before the server stopped.
	if b, err := os.ReadFile(f.cfg.LeaseFile); err != nil || !strings.Contains(string(b), "10.214.0.11") {
		t.Errorf("lease file after stop: %s %v", b, err)
	}
}

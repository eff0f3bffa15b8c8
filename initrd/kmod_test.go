package initrd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const depSample = `kernel/fs/nfs/nfsv3.ko: kernel/fs/nfs/nfs.ko kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/nfs/nfs.ko: kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/lockd/lockd.ko: kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko
kernel/net/sunrpc/sunrpc.ko:
kernel/fs/nfs_common/grace.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/net/ethernet/realtek/r8169.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/realtek.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko:
kernel/drivers/virtio/virtio_ring.ko:
`

func sampleModules(t *testing.T) *Modules {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(depSample), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.alias"), []byte("alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169\nalias virtio:d00000001v* virtio_net\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.softdep"), []byte("# comment\nsoftdep r8169 pre: realtek\n"), 0o644)
	m, err := ReadModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestClosureOrder(t *testing.T) {
	m := sampleModules(t)
	paths, missing := m.Closure([]string{"af_packet", "nfsv3", "overlay"})
	if !slices.Equal(missing, []string{"af_packet"}) {
		t.Errorf("missing %v", missing)
	}
	var names []string
	for _, p := range paths {
		names = append(names, ModuleName(p))
	}
	pos := map[string]int{}
	for i, n := range names {
		pos[n] = i
	}
	if len(names) != 8 {
		t.Fatalf("closure %v", names)
	}
	for _, before := range [][2]string{{"netfs", "fscache"}, {"fscache", "nfs"}, {"sunrpc", "lockd"}, {"grace", "lockd"}, {"lockd", "nfs"}, {"nfs", "nfsv3"}} {
		if pos[before[0]] > pos[before[1]] {
			t.Errorf("%s loads after %s: %v", before[0], before[1], names)
		}
	}
	// Soft "pre" dependencies come first too.
	paths, _ = m.Closure([]string{"r8169"})
	if len(paths) != 3 || ModuleName(paths[len(paths)-1]) != "r8169" || !strings.Contains(strings.Join(paths, " "), "phy/realtek.ko") {
		t.Errorf("r8169 closure %v", paths)
	}
	// Compressed module names.
	if p, ok := m.Path("virtio-net"); !ok || ModuleName(p) != "virtio_net" {
		t.Errorf("virtio_net path %q", p)
	}
}

func TestMatchSample(t *testing.T) {
	m := sampleModules(t)
	if got := m.Match("pci:v000010ECd00008168sv00001043sd00008677bc02sc00i00"); !slices.Equal(got, []string{"r8169"}) {
		t.Errorf("r8169 device matched %v", got)
	}
	if got := m.Match("virtio:d00000001v00001AF4"); !slices.Equal(got, []string{"virtio_net"}) {
		t.Errorf("virtio net device matched %v", got)
	}
	if got := m.Match("pci:v00008086d00007000sv0000sd0000bc06sc01i00"); len(got) != 0 {
		t.Errorf("ISA bridge matched %v", got)
	}
}

// TestMatchRealAliases matches the modaliases of QEMU's NICs and of real
// Intel, Broadcom and Mellanox cards against this machine's Debian
// kernel's modules.alias.
func TestMatchRealAliases(t *testing.T) {
	dirs, _ := filepath.Glob("/lib/modules/*/modules.alias")
	if len(dirs) == 0 {
		if testing.Short() {
			t.Skip("no kernel modules installed")
		}
		t.Fatal("no /lib/modules/*/modules.alias: apt-get install linux-image-amd64")
	}
	m, err := ReadModules(filepath.Dir(dirs[len(dirs)-1]))
	if err != nil {
		t.Fatal(err)
	}
	for alias, want := range map[string]string{
		"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00": "e1000",      // QEMU e1000
		"pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00": "e1000e",     // Intel 82574L
		"pci:v00008086d00001521sv00008086sd00000001bc02sc00i00": "igb",        // Intel I350
		"pci:v00008086d00001572sv00008086sd00000000bc02sc00i00": "i40e",       // Intel X710
		"pci:v000014E4d00001657sv0000103Csd000022BEbc02sc00i00": "tg3",        // Broadcom BCM5719
		"pci:v000014E4d000016D7sv000014E4sd00001402bc02sc00i00": "bnxt_en",    // Broadcom BCM57414
		"pci:v000015B3d00001017sv000015B3sd00000020bc02sc00i00": "mlx5_core",  // Mellanox ConnectX-5
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00": "virtio_pci", // QEMU virtio-net, the PCI side
		"virtio:d00000001v00001AF4":                             "virtio_net", // and the virtio side
	} {
		if got := m.Match(alias); !slices.Contains(got, want) {
			t.Errorf("%s matched %v, want %s", alias, got, want)
		}
	}
}

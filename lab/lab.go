// Package lab builds an isolated cluster network on one machine, out of
// network namespaces, for bootd's end-to-end tests and demo: a "site"
// namespace running the site's own DHCP server (dnsmasq, DHCP only, no
// boot options), a "master" namespace running bootd, and a "switch"
// namespace holding the bridge that joins them to QEMU nodes' tap devices.
// A lab of two masters adds "master2", keepalived in both and a registry
// in the site namespace (masters.go).
//
// Every address lives inside these namespaces; nothing is routed to any
// other network. Everything the lab starts is recorded (namespaces by
// name, processes by PID and start time) and removed by Down, which is
// safe to repeat.
package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The lab network. 10.213.0.0/24 exists only inside the lab's namespaces.
const (
	Subnet    = "10.213.0.0"
	MasterIP  = "10.213.0.1"
	SiteIP    = "10.213.0.2"
	Prefix    = "/24"
	RangeLow  = "10.213.0.100"
	RangeHigh = "10.213.0.199"
	MasterIf  = "m0" // bootd's interface, in the master namespace
	siteIf    = "s0"
	bridge    = "br0"
)

// Lab is one lab instance. Its state is kept in Dir/lab.json so that a
// later process (`bootd lab down`) can remove what an earlier one made.
type Lab struct {
	Dir   string   `json:"dir"`
	Name  string   `json:"name"` // namespace name prefix
	Procs []Proc   `json:"procs"`
	Taps  []string `json:"taps"`
	Nodes []Node   `json:"nodes"`
	// Out is where Down says which processes it left alone; nil is
	// standard error.
	Out io.Writer `json:"-"`
}

// Proc is a process the lab started. Its PID alone names it only while it
// runs: after it exits, or after a reboot, the number may be anyone's, and
// bootd runs as root. Its start time on this boot pins it down.
type Proc struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`
	// StartTicks is field 22 of /proc/PID/stat (clock ticks after boot)
	// and BootID the kernel's boot_id, both when the lab started it.
	// Missing in lab.json files of older bootds.
	StartTicks uint64 `json:"start_ticks,omitempty"`
	BootID     string `json:"boot_id,omitempty"`
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("reading the boot ID: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// procStat returns a process's state (field 3 of /proc/PID/stat) and
// start time (field 22).
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// parentheses and spaces included: count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: cannot read state and start time after the command name", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return f[0][0], start, nil
}

// identify records a process the lab has just started. It must not have
// been waited for yet: until then its PID cannot be anyone else's.
func identify(name string, pid int, log string) (Proc, error) {
	boot, err := bootID()
	if err != nil {
		return Proc{}, err
	}
	_, start, err := procStat(pid)
	if err != nil {
		return Proc{}, fmt.Errorf("recording %s's start time: %w", name, err)
	}
	return Proc{Name: name, PID: pid, Log: log, StartTicks: start, BootID: boot}, nil
}

// NS returns the full name of one of the lab's namespaces.
func (l *Lab) NS(role string) string { return l.Name + "-" + role }

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *Lab) in(role string, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", l.NS(role)}, args...)...)
}

// Check says what is missing to run a lab here, naming the package.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, tap devices)")
	}
	need := map[string]string{
		"ip":                 "iproute2",
		"dnsmasq":            "dnsmasq-base",
		"qemu-system-x86_64": "qemu-system-x86",
	}
	var missing []string
	for bin, pkg := range need {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", bin, pkg))
		}
	}
	for file, pkg := range map[string]string{
		"/usr/share/OVMF/OVMF_CODE_4M.fd":            "ovmf",
		"/usr/lib/ipxe/qemu/efi-e1000.rom":           "ipxe-qemu",
		"/usr/lib/PXELINUX/pxelinux.0":               "pxelinux",
		"/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi":   "syslinux-efi",
		"/usr/lib/syslinux/modules/bios/ldlinux.c32": "syslinux-common",
		"/usr/lib/ipxe/snponly.efi":                  "ipxe",
		"/usr/lib/ipxe/undionly.kpxe":                "ipxe",
	} {
		if _, err := os.Stat(file); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", file, pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the lab cannot run, missing: %s", strings.Join(missing, "; "))
	}
	return nil
}

// Up creates the namespaces, the bridge and the links between them.
func Up(dir, name string) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Lab{Dir: dir, Name: name}
	// A lab of the same name left behind by a killed run goes first.
	_ = l.removeNamespaces()
	if err := l.save(); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "netns", "add", l.NS("sw")},
		{"ip", "netns", "add", l.NS("site")},
		{"ip", "netns", "add", l.NS("master")},
	}
	for _, role := range []string{"sw", "site", "master"} {
		steps = append(steps, []string{"ip", "-n", l.NS(role), "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"ip", "-n", l.NS("sw"), "link", "add", bridge, "type", "bridge", "forward_delay", "0"},
		[]string{"ip", "-n", l.NS("sw"), "link", "set", bridge, "up"},
		[]string{"ip", "-n", l.NS("sw"), "link", "add", "to-site", "type", "veth", "peer", "name", siteIf, "netns", l.NS("site")},
		[]string{"ip", "-n", l.NS("sw"), "link", "add", "to-master", "type", "veth", "peer", "name", MasterIf, "netns", l.NS("master")},
		[]string{"ip", "-n", l.NS("sw"), "link", "set", "to-site", "master", bridge, "up"},
		[]string{"ip", "-n", l.NS("sw"), "link", "set", "to-master", "master", bridge, "up"},
		[]string{"ip", "-n", l.NS("site"), "addr", "add", SiteIP + Prefix, "dev", siteIf},
		[]string{"ip", "-n", l.NS("site"), "link", "set", siteIf, "up"},
		[]string{"ip", "-n", l.NS("master"), "addr", "add", MasterIP + Prefix, "dev", MasterIf},
		[]string{"ip", "-n", l.NS("master"), "link", "set", MasterIf, "up"},
	)
	for _, s := range steps {
		if err := run(s...); err != nil {
			l.Down()
			return nil, fmt.Errorf("building the lab network: %w", err)
		}
	}
	return l, nil
}

// Load reads the state of a lab made earlier.
func Load(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		return nil, err
	}
	var l Lab
	return &l, json.Unmarshal(b, &l)
}

func (l *Lab) save() error {
	b, _ := json.MarshalIndent(l, "", "  ")
	return os.WriteFile(filepath.Join(l.Dir, "lab.json"), b, 0o644)
}

// Start runs a command inside one of the lab's namespaces, its output to
// Dir/NAME.log, and records its PID.
func (l *Lab) Start(role, name string, args ...string) (*exec.Cmd, error) {
	logPath := filepath.Join(l.Dir, name+".log")
	// Appended to: a restarted process adds to the log of the one before.
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.NS(role)}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: Down signals the group, so nothing outlives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	f.Close()
	p, err := identify(name, cmd.Process.Pid, logPath)
	if err != nil {
		// Not yet waited for, so still ours to kill; unrecorded, nothing
		// else would stop it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return nil, err
	}
	l.Procs = append(l.Procs, p)
	go cmd.Wait() // reap
	return cmd, l.save()
}

// StartSiteDHCP runs dnsmasq as the site's DHCP server: addresses only,
// no boot options, no DNS.
func (l *Lab) StartSiteDHCP() error {
	_, err := l.Start("site", "dnsmasq", "dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null",
		"--interface="+siteIf, "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--dhcp-range="+RangeLow+","+RangeHigh+",255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(l.Dir, "dnsmasq.leases"),
		"--pid-file="+filepath.Join(l.Dir, "dnsmasq.pid"), "--log-dhcp")
	return err
}

// Leases returns the site DHCP server's leases file.
func (l *Lab) Leases() string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, "dnsmasq.leases"))
	return string(b)
}

// Firmware of a node.
type Firmware string

const (
	BIOS Firmware = "bios"
	UEFI Firmware = "uefi"
	// UEFINative is OVMF booting by its own PXE stack: the NIC has no
	// option ROM, so no iPXE, as on most real UEFI servers. OVMF drives
	// only virtio NICs itself, so such a node's NIC is virtio-net-pci.
	UEFINative Firmware = "uefi-native"
)

// Firmwares are every node firmware, in the order the matrix runs them.
var Firmwares = []Firmware{BIOS, UEFI, UEFINative}

// NodeSpec describes a QEMU node.
type NodeSpec struct {
	Name     string
	MAC      string
	Firmware Firmware
	NIC      string // QEMU device model: e1000 (default) or virtio-net-pci
	MemoryMB int
	// Kernel, Initrd and Append boot the node directly (QEMU -kernel)
	// instead of by PXE, to test an initrd on its own.
	Kernel, Initrd, Append string
	// Disk is a raw disk image the node gets as a virtio disk: a node
	// booted from a local disk, to compare network boots against.
	Disk string
	// Image is the image the node boots (its entry in bootd's node
	// table); "" is the lab's default. StartNode does not use it.
	Image string
}

// Node is a running QEMU node.
type Node struct {
	NodeSpec
	Console string // serial console log (everything the node printed)
	Socket  string // serial console socket (to type into)
	Monitor string // QEMU monitor socket (reset)
}

// StartNode powers on a PXE-booting QEMU node (TCG: KVM guests hang on the
// machines this was built on) on a new tap device of the lab's bridge.
func (l *Lab) StartNode(spec NodeSpec) (*Node, error) {
	if spec.NIC == "" {
		spec.NIC = "e1000"
	}
	if spec.Firmware == UEFINative {
		spec.NIC = "virtio-net-pci"
	}
	if spec.MemoryMB == 0 {
		spec.MemoryMB = 512
	}
	tap := fmt.Sprintf("tap%d", len(l.Taps))
	for _, s := range [][]string{
		{"ip", "-n", l.NS("sw"), "tuntap", "add", "dev", tap, "mode", "tap"},
		{"ip", "-n", l.NS("sw"), "link", "set", tap, "master", bridge, "up"},
	} {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	l.Taps = append(l.Taps, tap)
	console := filepath.Join(l.Dir, spec.Name+".console")
	sock := filepath.Join(l.Dir, spec.Name+".sock")
	mon := filepath.Join(l.Dir, spec.Name+".monitor")
	os.Remove(console)
	os.Remove(sock)
	os.Remove(mon)
	// The serial console is a socket (for `bootd lab console` and the
	// tests to type into) that also logs everything to a file. No
	// -no-reboot: a node that reboots (a reset, its init giving up) boots
	// from the network again, as hardware does.
	args := []string{"qemu-system-x86_64", "-name", spec.Name, "-m", fmt.Sprint(spec.MemoryMB), "-smp", "1",
		"-display", "none", "-monitor", "unix:" + mon + ",server=on,wait=off",
		"-chardev", "socket,id=con0,path=" + sock + ",server=on,wait=off,logfile=" + console,
		"-serial", "chardev:con0",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", spec.NIC + ",netdev=n0,mac=" + spec.MAC + romfile(spec.Firmware)}
	if spec.Disk != "" {
		args = append(args, "-drive", "file="+spec.Disk+",if=virtio,format=raw")
	}
	if spec.Kernel != "" {
		args = append(args, "-kernel", spec.Kernel, "-initrd", spec.Initrd, "-append", spec.Append)
	}
	switch {
	case spec.Firmware == UEFI || spec.Firmware == UEFINative:
		vars := filepath.Join(l.Dir, spec.Name+".vars.fd")
		b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
		if err != nil {
			return nil, fmt.Errorf("UEFI node needs OVMF (apt-get install ovmf): %w", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return nil, err
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	case spec.Kernel == "":
		args = append(args, "-boot", "n")
	}
	if _, err := l.Start("sw", spec.Name, args...); err != nil {
		return nil, err
	}
	n := &Node{NodeSpec: spec, Console: console, Socket: sock, Monitor: mon}
	l.Nodes = append(l.Nodes, *n)
	return n, l.save()
}

// romfile is the NIC's option ROM setting: none for UEFINative (the
// firmware's own network stack boots), QEMU's iPXE ROM otherwise.
func romfile(fw Firmware) string {
	if fw == UEFINative {
		return ",romfile="
	}
	return ""
}

// WaitConsole waits until the node's serial console shows want, and
// returns the console text.
func (n *Node) WaitConsole(want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(n.Console)
		if bytes.Contains(b, []byte(want)) {
			return string(b), nil
		}
		if time.Now().After(deadline) {
			return string(b), fmt.Errorf("node %s: %q not on the console after %v", n.Name, want, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Verify returns nil if p's PID is still the process the lab started
// (a zombie counts), and otherwise says why not.
func (p Proc) Verify() error {
	_, err := p.state()
	return err
}

func (p Proc) state() (byte, error) {
	if p.StartTicks == 0 || p.BootID == "" {
		return 0, errors.New("lab.json is from an older bootd, which recorded only the PID: cannot tell whether it is still the lab's process; stop it by hand if it is")
	}
	boot, err := bootID()
	if err != nil {
		return 0, err
	}
	if boot != p.BootID {
		return 0, errors.New("gone: started before the last reboot")
	}
	state, start, err := procStat(p.PID)
	if errors.Is(err, os.ErrNotExist) {
		return 0, errors.New("gone")
	}
	if err != nil {
		return 0, err
	}
	if start != p.StartTicks {
		return 0, fmt.Errorf("gone: the PID is now another process's (started at tick %d, not %d)", start, p.StartTicks)
	}
	return state, nil
}

// running: still the lab's and not yet exited.
func (p Proc) running() bool {
	state, err := p.state()
	return err == nil && state != 'Z'
}

// Down stops every process the lab started and removes its namespaces
// and devices. Running it twice is harmless. A process is signalled only
// while its PID is verified to still be the lab's (see Proc); the others
// are left alone, and Out says so.
func (l *Lab) Down() error {
	out := l.Out
	if out == nil {
		out = os.Stderr
	}
	var mine []Proc
	for _, p := range l.Procs {
		if err := p.Verify(); err != nil {
			fmt.Fprintf(out, "lab: not stopping %s (pid %d): %v\n", p.Name, p.PID, err)
			continue
		}
		// Signal the process group, then make sure.
		_ = syscall.Kill(-p.PID, syscall.SIGTERM)
		mine = append(mine, p)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range mine {
		for p.running() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		// Verified again: once it has exited, its PID is free for anyone.
		if p.Verify() == nil {
			_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		}
	}
	l.Procs = nil
	err := l.removeNamespaces()
	l.Taps = nil
	if l.Dir != "" {
		_ = l.save()
	}
	return err
}

func (l *Lab) removeNamespaces() error {
	var errs []error
	for _, role := range []string{"sw", "site", "master", MasterRole(2)} {
		ns := l.NS(role)
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			continue
		}
		// Deleting the namespace destroys its devices (taps, veths, bridge).
		if err := run("ip", "netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PowerOff pulls a node's plug: its QEMU is killed, the guest gets no
// chance to shut down.
func (l *Lab) PowerOff(name string) error {
	for _, p := range l.Procs {
		if p.Name != name {
			continue
		}
		if err := p.Verify(); err != nil {
			return fmt.Errorf("node %s (pid %d): %w", name, p.PID, err)
		}
		return syscall.Kill(-p.PID, syscall.SIGKILL)
	}
	return fmt.Errorf("no node %s", name)
}

// Reset presses a node's reset button (QEMU's system_reset): the guest
// reboots from its firmware without shutting down.
func (l *Lab) Reset(name string) error {
	n, ok := l.Node(name)
	if !ok {
		return fmt.Errorf("no node %s", name)
	}
	c, err := net.DialTimeout("unix", n.Monitor, 5*time.Second)
	if err != nil {
		return fmt.Errorf("node %s monitor: %w", name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("system_reset\n")); err != nil {
		return fmt.Errorf("node %s monitor: %w", name, err)
	}
	// Wait for the monitor to take it before closing.
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil || strings.Contains(string(buf[:n]), "(qemu)") && strings.Contains(string(buf[:n]), "system_reset") {
			return nil
		}
	}
}

// Restart stops a process the lab started (with sig: SIGKILL for a
// crash) and starts it again with the same arguments.
func (l *Lab) Restart(role, name string, sig syscall.Signal, args ...string) error {
	if err := l.Stop(name, sig); err != nil {
		return err
	}
	_, err := l.Start(role, name, args...)
	return err
}

// Stop stops a process the lab started, with sig, and forgets it.
func (l *Lab) Stop(name string, sig syscall.Signal) error {
	for i, p := range l.Procs {
		if p.Name != name {
			continue
		}
		if err := p.Verify(); err != nil {
			return fmt.Errorf("%s (pid %d): %w", name, p.PID, err)
		}
		if err := syscall.Kill(-p.PID, sig); err != nil {
			return err
		}
		deadline := time.Now().Add(10 * time.Second)
		for p.running() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.running() {
			return fmt.Errorf("%s (pid %d) did not stop", name, p.PID)
		}
		l.Procs = append(l.Procs[:i:i], l.Procs[i+1:]...)
		return l.save()
	}
	return fmt.Errorf("no process %s", name)
}

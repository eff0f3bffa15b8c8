// markerinit is the /init of the lab's marker initrd: it proves that a
// node ran the initrd bootd served, with the command line bootd generated,
// and powers the node off.
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.MkdirAll("/proc", 0o755)
	syscall.Mount("proc", "/proc", "proc", 0, "")
	cmdline, _ := os.ReadFile("/proc/cmdline")
	out, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		out = os.Stdout
	}
	fmt.Fprintf(out, "\nBOOTD-MARKER-OK cmdline=%s\n", strings.TrimSpace(string(cmdline)))
	time.Sleep(500 * time.Millisecond)
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

package main

import "testing"

func TestRunsAsInit(t *testing.T) {
	for _, c := range []struct {
		name string
		pid  int
		args []string
		want bool
	}{
		// The kernel runs the initramfs's /init with what it did not
		// understand on its command line as arguments.
		{"kernel starts /init", 1, []string{"/init"}, true},
		{"kernel passes words to /init", 1, []string{"/init", "single", "nomodeset"}, true},
		{"kernel passes -- args", 1, []string{"/init", "--", "x"}, true},
		// PID 1 in a container is a master, not a node.
		{"serve in a container", 1, []string{"/usr/local/bin/bootd", "serve", "--config", "/etc/bootd.yaml"}, false},
		{"bare bootd in a container", 1, []string{"bootd"}, false},
		{"lab verb in a container", 1, []string{"bootd", "lab", "status"}, false},
		{"help in a container", 1, []string{"bootd", "--help"}, false},
		{"copied as init, given a verb", 1, []string{"/init", "serve"}, false},
		{"empty argv", 1, nil, false},
		// Not PID 1: the node init would mount, switch_root and reboot
		// the machine it runs on.
		{"serve", 4242, []string{"bootd", "serve"}, false},
		{"named /init but not PID 1", 4242, []string{"/init"}, false},
		{"no arguments", 4242, []string{"bootd"}, false},
	} {
		if got := runsAsInit(c.pid, c.args); got != c.want {
			t.Errorf("%s: runsAsInit(%d, %q) = %v, want %v", c.name, c.pid, c.args, got, c.want)
		}
	}
}

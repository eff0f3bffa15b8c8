package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootd/bootd/web"
)

// APIPort is where the lab's bootd serves its page and API, on MasterIP.
const APIPort = 8080

// APIURL is the lab master's status page as seen inside the lab.
func APIURL() string { return fmt.Sprintf("http://%s:%d", MasterIP, APIPort) }

// API returns a client of the lab master's API. The master's address
// exists only inside the lab's namespaces, so the client's connections
// are made from inside the master's namespace.
func (l *Lab) API() *web.Client {
	dial := inNamespace(filepath.Join("/run/netns", l.NS("master")))
	return &web.Client{Base: APIURL(), HTTP: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}}
}

// inNamespace returns a dialer whose sockets are made in the network
// namespace at path: a socket belongs to the namespace of the thread that
// made it, so a goroutine locked to its thread enters the namespace, makes
// the connection and comes back.
func inNamespace(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			c, err := func() (net.Conn, error) {
				self, err := os.Open("/proc/thread-self/ns/net")
				if err != nil {
					return nil, err
				}
				defer self.Close()
				ns, err := os.Open(path)
				if err != nil {
					return nil, err
				}
				defer ns.Close()
				if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
					return nil, fmt.Errorf("entering %s: %w", path, err)
				}
				var d net.Dialer
				c, err := d.DialContext(ctx, network, addr)
				if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
					// The thread stays locked and ends with this
					// goroutine: it must not run anything else.
					if c != nil {
						c.Close()
					}
					return nil, fmt.Errorf("leaving %s: %w", path, err)
				}
				runtime.UnlockOSThread()
				return c, err
			}()
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"
)

// Client reads a running bootd's API: `bootd nodes` and the lab use it.
type Client struct {
	// Base is the server's URL, e.g. http://127.0.0.1:8080.
	Base string
	// HTTP is the client to use (default: one with a 10 s timeout).
	HTTP *http.Client
}

// ErrNoNode is returned for a node the server does not know.
var ErrNoNode = errors.New("no such node")

// ClientFor returns a client for a server listening on listen (an
// http.listen value): an unspecified address is reached on loopback.
func ClientFor(listen string) (*Client, error) {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %q: %w", listen, err)
	}
	a := ap.Addr()
	if a.IsUnspecified() {
		a = netip.IPv6Loopback()
		if ap.Addr().Is4() {
			a = netip.MustParseAddr("127.0.0.1")
		}
	}
	return &Client{Base: "http://" + netip.AddrPortFrom(a, ap.Port()).String()}, nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", c.Base+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("asking bootd (is `bootd serve` running, with http.listen?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ErrNoNode
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v)
}

// Nodes returns the node list.
func (c *Client) Nodes(ctx context.Context) (NodeList, error) {
	var l NodeList
	err := c.get(ctx, "/api/v1/nodes", &l)
	return l, err
}

// Node returns one node by MAC, IP or hostname.
func (c *Client) Node(ctx context.Context, key string) (NodeDetail, error) {
	var d NodeDetail
	err := c.get(ctx, "/api/v1/nodes/"+url.PathEscape(key), &d)
	return d, err
}

package web

// A headless Chromium driven over the DevTools protocol on a pipe, for the
// tests of the status page and the lab's: load a page, wait for what its
// scripts do, read the DOM, take a screenshot. It needs nothing but the
// chromium package. (--dump-dom does not do: it waits for the network to
// go quiet, and the page's event stream never does.)

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ChromiumPath is the browser StartChromium runs (Debian's chromium).
var ChromiumPath = "/usr/bin/chromium"

// ChromiumFlags are the flags every run gets: headless, as root, and
// without the background connections a closed network refuses.
var ChromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-extensions", "--disable-dev-shm-usage", "--no-default-browser-check",
	"--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
}

// Browser is one headless Chromium with one page.
type Browser struct {
	cmd     *exec.Cmd
	dir     string // the throwaway profile
	cmds    *os.File
	stderr  *tailWriter
	exited  chan struct{}
	mu      sync.Mutex
	next    int
	pending map[int]chan cdpReply
	session string
	readErr error
}

type cdpReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// StartChromium starts a headless Chromium with a width×height window
// (1280×900 if 0), in network namespace netns if not "". It runs until
// Close or the end of ctx.
func StartChromium(ctx context.Context, netns string, width, height int) (*Browser, error) {
	if width <= 0 || height <= 0 {
		width, height = 1280, 900
	}
	dir, err := os.MkdirTemp("", "bootd-chromium-")
	if err != nil {
		return nil, err
	}
	args := append(append([]string{ChromiumPath}, ChromiumFlags...),
		"--user-data-dir="+dir, fmt.Sprintf("--window-size=%d,%d", width, height), "about:blank")
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	b := &Browser{dir: dir, stderr: &tailWriter{}, exited: make(chan struct{}), pending: map[int]chan cdpReply{}}
	b.cmd = exec.CommandContext(ctx, args[0], args[1:]...)
	b.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	b.cmd.Stderr = b.stderr
	// Chromium's helpers share its process group, and go with it.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.Cancel = func() error { return syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL) }
	b.cmd.WaitDelay = 2 * time.Second
	// The protocol: Chromium reads commands on fd 3, writes on fd 4,
	// each message ended by a NUL.
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		cmdR.Close()
		cmdW.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	b.cmd.ExtraFiles = []*os.File{cmdR, outW}
	err = b.cmd.Start()
	cmdR.Close()
	outW.Close()
	if err != nil {
		cmdW.Close()
		outR.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting chromium: %w", err)
	}
	b.cmds = cmdW
	go func() {
		b.cmd.Wait()
		close(b.exited)
	}()
	go b.read(outR)
	if err := b.open(ctx, width, height); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// open makes the page and attaches to it.
func (b *Browser) open(ctx context.Context, width, height int) error {
	var t struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "Target.createTarget", map[string]any{"url": "about:blank"}, &t); err != nil {
		return err
	}
	var s struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "Target.attachToTarget", map[string]any{"targetId": t.TargetID, "flatten": true}, &s); err != nil {
		return err
	}
	b.session = s.SessionID
	return b.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}, nil)
}

func (b *Browser) read(r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.readErr = err
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var rep cdpReply
		if json.Unmarshal(msg[:len(msg)-1], &rep) != nil || rep.ID == 0 {
			continue // an event: nothing here waits for them
		}
		b.mu.Lock()
		ch := b.pending[rep.ID]
		delete(b.pending, rep.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// call sends one command to the page (or to the browser, for Target.*)
// and decodes its result into v.
func (b *Browser) call(ctx context.Context, method string, params any, v any) error {
	ch := make(chan cdpReply, 1)
	b.mu.Lock()
	if b.readErr != nil {
		b.mu.Unlock()
		return b.gone(method)
	}
	b.next++
	id := b.next
	b.pending[id] = ch
	msg := map[string]any{"id": id, "method": method, "params": params}
	if b.session != "" && !strings.HasPrefix(method, "Target.") {
		msg["sessionId"] = b.session
	}
	data, _ := json.Marshal(msg)
	_, err := b.cmds.Write(append(data, 0))
	b.mu.Unlock()
	if err != nil {
		return b.gone(method)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return b.gone(method)
		}
		if rep.Error != nil {
			return fmt.Errorf("chromium: %s: %s", method, rep.Error.Message)
		}
		if v != nil {
			return json.Unmarshal(rep.Result, v)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("chromium: %s: %w", method, ctx.Err())
	}
}

func (b *Browser) gone(method string) error {
	return fmt.Errorf("chromium: %s: the browser is gone; its last words: %s", method, b.stderr.String())
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into v (if not nil).
func (b *Browser) Eval(ctx context.Context, expr string, v any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("chromium: %s: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	if v == nil || r.Result.Value == nil {
		return nil
	}
	return json.Unmarshal(r.Result.Value, v)
}

// Navigate loads url and waits for its load event.
func (b *Browser) Navigate(ctx context.Context, url string) error {
	// The old document carries a mark; the new one is loaded when the
	// page has no mark and is complete.
	if err := b.Eval(ctx, "window.__bootdOld = true", nil); err != nil {
		return err
	}
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := b.call(ctx, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return err
	}
	if nav.ErrorText != "" {
		return fmt.Errorf("chromium: loading %s: %s", url, nav.ErrorText)
	}
	if err := b.WaitFor(ctx, "!window.__bootdOld && document.readyState === 'complete'"); err != nil {
		return fmt.Errorf("loading %s: %w", url, err)
	}
	return nil
}

// WaitFor waits until the JavaScript expression is true in the page.
func (b *Browser) WaitFor(ctx context.Context, expr string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var ok bool
		if err := b.Eval(ctx, "!!("+expr+")", &ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chromium: waiting for %s: %w", expr, ctx.Err())
		case <-b.exited:
			return b.gone("waiting for " + expr)
		case <-tick.C:
		}
	}
}

// DOM returns the page's document as it is now, after its scripts ran.
func (b *Browser) DOM(ctx context.Context) (string, error) {
	var s string
	err := b.Eval(ctx, "document.documentElement.outerHTML", &s)
	return s, err
}

// Screenshot writes a PNG of the window to file, or of the whole page if
// full.
func (b *Browser) Screenshot(ctx context.Context, file string, full bool) error {
	params := map[string]any{"format": "png"}
	if full {
		var m struct {
			Size struct{ Width, Height float64 } `json:"cssContentSize"`
		}
		if err := b.call(ctx, "Page.getLayoutMetrics", map[string]any{}, &m); err != nil {
			return err
		}
		params["captureBeyondViewport"] = true
		params["clip"] = map[string]any{"x": 0, "y": 0, "width": m.Size.Width, "height": m.Size.Height, "scale": 1}
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := b.call(ctx, "Page.captureScreenshot", params, &shot); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(file, png, 0o644)
}

// Close ends the browser and removes its profile.
func (b *Browser) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	b.call(ctx, "Browser.close", map[string]any{}, nil)
	cancel()
	select {
	case <-b.exited:
	case <-time.After(3 * time.Second):
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
	}
	b.cmds.Close()
	return os.RemoveAll(b.dir)
}

// Chromium loads url in a fresh headless Chromium (in network namespace
// netns if not ""), lets the page's scripts run for budget after it
// loaded, writes a screenshot of the 1280×900 window to screenshot (if
// not "") and returns the DOM.
func Chromium(ctx context.Context, netns, url, screenshot string, budget time.Duration) (dom string, err error) {
	b, err := StartChromium(ctx, netns, 1280, 900)
	if err != nil {
		return "", err
	}
	defer b.Close()
	if err := b.Navigate(ctx, url); err != nil {
		return "", err
	}
	select {
	case <-time.After(budget):
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if screenshot != "" {
		if err := b.Screenshot(ctx, screenshot, false); err != nil {
			return "", err
		}
	}
	return b.DOM(ctx)
}

// tailWriter keeps the last 4 KiB written to it.
type tailWriter struct {
	mu sync.Mutex
	b  []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if over := len(w.b) - 4096; over > 0 {
		w.b = append(w.b[:0], w.b[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(string(w.b))
}

package web

// The status page: GET / (the node table), GET /nodes/{node} (one node)
// and their two assets under /static/. The pages are rendered on the
// server, so that the first paint holds the data and works without
// scripts; ui/bootd.js then keeps them live from the JSON API and the
// event stream, and sorts and filters the table.

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/bootd/bootd/events"
)

//go:embed ui/*.html ui/bootd.css ui/bootd.js
var uiFS embed.FS

// pageCSP allows the page nothing but bootd itself: no inline script or
// style, no other origin, no framing.
const pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one file served under /static/.
type asset struct {
	body    []byte
	ctype   string
	version string // a hash of body: the pages link name?v=version
}

// assets are the only files /static/ serves.
var assets = func() map[string]asset {
	m := map[string]asset{}
	for name, ctype := range map[string]string{"bootd.css": "text/css; charset=utf-8", "bootd.js": "text/javascript; charset=utf-8"} {
		b, err := uiFS.ReadFile("ui/" + name)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		m[name] = asset{body: b, ctype: ctype, version: hex.EncodeToString(sum[:6])}
	}
	return m
}()

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"static": func(name string) string { return "/static/" + name + "?v=" + assets[name].version },
	"ago":    ago,
	"abs":    absTime,
	"clock":  func(t time.Time) string { return t.UTC().Format(time.TimeOnly) },
	"secs":   secs,
	"since":  func(now, t time.Time) agoArg { return agoArg{now, t} },
	"logOf":  func(id, title string, lines []events.Line) logArg { return logArg{id, title, lines} },
	"image":  imageGen,
	"stages": func() []events.Stage { return append(append([]events.Stage(nil), events.Stages...), StageUnseen) },
}).ParseFS(uiFS, "ui/*.html"))

// agoArg and logArg carry two or three values into a template ("when",
// "log").
type agoArg struct{ Now, T time.Time }

type logArg struct {
	ID, Title string
	Lines     []events.Line
}

// ago says how long before now t was: "12 s ago", "3 m ago", "5 h ago",
// "2 d ago"; "" for no time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d m ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%d d ago", int(d/(24*time.Hour)))
}

func absTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// secs is a duration in seconds with one decimal.
func secs(s float64) string { return fmt.Sprintf("%.1f s", s) }

func imageGen(image string, gen int) string {
	if image == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d", image, gen)
}

// render writes one page, or a plain 500 if the template fails (never
// half a page).
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("rendering the status page", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// listView is GET /.
type listView struct {
	NodeList
	Rows         []listRow // the nodes the filter lets through
	Query, Stage string    // the filter: ?q= words, ?stage=
}

type listRow struct {
	NodeSummary
	Key string // what /nodes/{node} is linked by
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	v := listView{NodeList: s.List(), Query: r.URL.Query().Get("q"), Stage: r.URL.Query().Get("stage")}
	keys := linkKeys(v.Nodes)
	for i, n := range v.Nodes {
		if matches(n, v.Query, v.Stage) {
			v.Rows = append(v.Rows, listRow{NodeSummary: n, Key: keys[i]})
		}
	}
	s.render(w, http.StatusOK, "list.html", v)
}

// matches is the table's filter, as bootd.js applies it: every word of
// q is in the hostname, MAC, IP, stage or image, and the stage is stage.
func matches(n NodeSummary, q, stage string) bool {
	if stage != "" && string(n.Stage) != stage {
		return false
	}
	hay := strings.ToLower(strings.Join([]string{n.Hostname, n.MAC, n.IP, string(n.Stage), n.Image}, " "))
	for _, w := range strings.Fields(strings.ToLower(q)) {
		if !strings.Contains(hay, w) {
			return false
		}
	}
	return true
}

// linkName is a hostname fit for a link, as bootd.js checks it.
var linkName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// linkKeys names each node for its link: by hostname where that finds
// the node (a plain name, no other node has it, and it cannot be read as
// a MAC or an address), else by MAC.
func linkKeys(ns []NodeSummary) []string {
	count := map[string]int{}
	for _, n := range ns {
		count[n.Hostname]++
	}
	keys := make([]string, len(ns))
	for i, n := range ns {
		keys[i] = n.MAC
		h := n.Hostname
		if _, err := netip.ParseAddr(h); err == nil {
			continue
		}
		if hw, err := net.ParseMAC(h); err == nil && len(hw) == 6 {
			continue
		}
		if count[h] == 1 && linkName.MatchString(h) {
			keys[i] = h
		}
	}
	return keys
}

// nodeView is GET /nodes/{node}.
type nodeView struct {
	NodeDetail
	Now   time.Time
	Boots []bootRow // newest first
}

func (s *Server) nodePage(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("node")
	d, ok := s.Detail(key)
	if !ok {
		s.render(w, http.StatusNotFound, "missing.html", key)
		return
	}
	now := time.Now().UTC()
	s.render(w, http.StatusOK, "node.html", nodeView{NodeDetail: d, Now: now, Boots: timeline(d.Node, now)})
}

// The timeline, as bootd.js draws it too. Each boot is one row; the
// stages up to the first of up, down or lost share the row by the time
// they took (the last of an unfinished boot runs to now), and each of
// those that end a boot gets a block of termWidth percent at the end.
const termWidth = 12.0

// bootRow is one boot on the timeline.
type bootRow struct {
	Name    string // "this boot", "previous boot", "3 boots ago"
	Start   time.Time
	Outcome string // "up in 41.2 s", "lost after 600.0 s", "at kernel for 3.1 s"
	Lost    bool
	Bars    []bar
	Stages  []stageRow
}

// bar is one stage of a boot on the timeline, in percent of the row.
type bar struct {
	Stage events.Stage
	X, W  float64
	Label string // stage and seconds since the boot's start
	Title string
	Open  bool // the stage the boot is at now
}

// stageRow is one stage of a boot in its table.
type stageRow struct {
	events.At
	Offset float64 // seconds since the boot's start
	Took   string  // until the next stage
}

func terminal(s events.Stage) bool {
	return s == events.StageUp || s == events.StageDown || s == events.StageLost
}

func timeline(n events.Node, now time.Time) []bootRow {
	var rows []bootRow
	for i := len(n.Boots) - 1; i >= 0; i-- {
		b := n.Boots[i]
		if len(b.Stages) == 0 {
			continue
		}
		row := bootRow{Name: bootName(len(n.Boots) - 1 - i), Start: b.Stages[0].Time}
		t0, st := b.Stages[0].Time, b.Stages
		off := func(t time.Time) float64 { return t.Sub(t0).Seconds() }
		// The stages that share the row by time: those before the first
		// that ends a boot; an older boot that did not end (from before a
		// restart) draws its last stage as a block too.
		k := 0
		for k < len(st) && !terminal(st[k].Stage) {
			k++
		}
		open := k == len(st) && i == len(n.Boots)-1
		if k == len(st) && !open {
			k--
		}
		end := now
		if k < len(st) {
			end = st[k].Time
		} else if end.Before(st[len(st)-1].Time) {
			end = st[len(st)-1].Time // a clock behind the records
		}
		span := end.Sub(t0).Seconds()
		width := 100 - termWidth*float64(len(st)-k)
		if k == 0 {
			width = 0
		}
		x := 0.0
		for j, a := range st {
			next := end
			if j+1 < len(st) {
				next = st[j+1].Time
			}
			w := 0.0
			switch {
			case j >= k && k == 0:
				w = 100 / float64(len(st))
			case j >= k:
				w = termWidth
			case span > 0:
				w = width * next.Sub(a.Time).Seconds() / span
			default:
				w = width / float64(k)
			}
			title := fmt.Sprintf("%s at %s, +%s", a.Stage, absTime(a.Time), secs(off(a.Time)))
			took := ""
			switch {
			case j+1 < len(st):
				took = secs(next.Sub(a.Time).Seconds())
				title += fmt.Sprintf(", %s to %s", took, st[j+1].Stage)
			case open:
				took = secs(next.Sub(a.Time).Seconds()) + " so far"
				title += ", " + took
			}
			if a.Detail != "" {
				title += ": " + a.Detail
			}
			row.Bars = append(row.Bars, bar{Stage: a.Stage, X: x, W: w, Label: fmt.Sprintf("%s +%.1fs", a.Stage, off(a.Time)), Title: title, Open: open && j == len(st)-1})
			row.Stages = append(row.Stages, stageRow{At: a, Offset: off(a.Time), Took: took})
			x += w
		}
		last := st[len(st)-1]
		switch up, reached := b.Reached(events.StageUp); {
		case last.Stage == events.StageLost:
			row.Lost = true
			row.Outcome = "lost after " + secs(off(last.Time))
		case reached:
			row.Outcome = "up in " + secs(off(up))
		case open:
			row.Outcome = fmt.Sprintf("at %s for %s", last.Stage, secs(now.Sub(last.Time).Seconds()))
		default:
			row.Outcome = fmt.Sprintf("%s after %s", last.Stage, secs(off(last.Time)))
		}
		rows = append(rows, row)
	}
	return rows
}

func bootName(back int) string {
	switch back {
	case 0:
		return "this boot"
	case 1:
		return "previous boot"
	}
	return fmt.Sprintf("%d boots ago", back)
}

// static serves the page's assets: only the embedded files, by their
// plain names. A link with the current version is cached for good; any
// other request revalidates.
func (s *Server) static(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", `"`+a.version+`"`)
	if r.URL.Query().Get("v") == a.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

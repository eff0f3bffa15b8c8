package nodes

// ImportISC reads the host declarations of a site's dhcpd.conf, for an
// admin who moves from ISC dhcpd + tftpd-hpa + nfs-kernel-server to bootd.
// No well-kept Go library parses dhcpd.conf (the ones that exist are
// grammars of a subset that fail on any statement they lack), and the
// part bootd needs is small: a tokenizer of dhcpd's lexical rules (words,
// quoted strings, '#' comments, braces, ';') and a walk of the statement
// tree that looks into every block (group, subnet, shared-network, pool,
// class, if) for `host` declarations. Whatever the node table has no
// field for is a warning, never an error: the admin's file is valid for
// dhcpd, and bootd only reads what it can carry.

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// maxDepth bounds the nesting of blocks: real files nest three or four
// deep (shared-network, subnet, pool, host), and the bound keeps a
// pathological input from recursing without end.
const maxDepth = 64

type iscToken struct {
	text   string
	line   int
	quoted bool // a "string": never a brace, ';' or ','
}

func (t iscToken) is(s string) bool { return !t.quoted && t.text == s }

// iscTokens splits dhcpd.conf text into tokens by dhcpd's lexical rules.
func iscTokens(r io.Reader) ([]iscToken, error) {
	br := bufio.NewReader(r)
	var toks []iscToken
	line := 1
	var word strings.Builder
	wordLine := 0
	flush := func() {
		if word.Len() > 0 {
			toks = append(toks, iscToken{text: word.String(), line: wordLine})
			word.Reset()
		}
	}
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			flush()
			return toks, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading dhcpd.conf: %w", err)
		}
		switch {
		case c == '\n':
			flush()
			line++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			flush()
		case c == '#':
			flush()
			if _, err := br.ReadString('\n'); err == io.EOF {
				return toks, nil
			} else if err != nil {
				return nil, fmt.Errorf("reading dhcpd.conf: %w", err)
			}
			line++
		case c == '{' || c == '}' || c == ';' || c == ',':
			flush()
			toks = append(toks, iscToken{text: string(c), line: line})
		case c == '"':
			flush()
			s, n, err := iscString(br)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			toks = append(toks, iscToken{text: s, line: line, quoted: true})
			line += n
		default:
			if word.Len() == 0 {
				wordLine = line
			}
			word.WriteByte(c)
		}
	}
}

// iscString reads a quoted string after its opening quote, with dhcpd's
// escapes (\" \\ \t \n \r and \ooo octal, \xhh hex), and returns it and
// the newlines it spanned.
func iscString(br *bufio.Reader) (string, int, error) {
	var b strings.Builder
	lines := 0
	for {
		c, err := br.ReadByte()
		if err != nil {
			return "", 0, fmt.Errorf("a quoted string is not closed")
		}
		switch c {
		case '"':
			return b.String(), lines, nil
		case '\n':
			lines++
			b.WriteByte(c)
		case '\\':
			e, err := br.ReadByte()
			if err != nil {
				return "", 0, fmt.Errorf("a quoted string is not closed")
			}
			switch e {
			case 't':
				b.WriteByte('\t')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 'x':
				b.WriteByte(byte(escapeDigits(br, 16, 2)))
			case '0', '1', '2', '3', '4', '5', '6', '7':
				br.UnreadByte()
				b.WriteByte(byte(escapeDigits(br, 8, 3)))
			case '\n':
				lines++
				b.WriteByte(e)
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
}

// escapeDigits reads up to max digits of base and returns their value.
func escapeDigits(br *bufio.Reader, base, max int) int {
	v := 0
	for range max {
		c, err := br.ReadByte()
		if err != nil {
			break
		}
		d, err := strconv.ParseUint(string(c), base, 8)
		if err != nil {
			br.UnreadByte()
			break
		}
		v = v*base + int(d)
	}
	return v & 0xff
}

// iscStmt is one statement: its words up to ';', or up to '{' and then
// the statements of its block.
type iscStmt struct {
	words []iscToken
	block bool
	body  []iscStmt
}

func (s iscStmt) line() int { return s.words[0].line }

func (s iscStmt) String() string {
	var w []string
	for _, t := range s.words {
		if t.quoted {
			w = append(w, strconv.Quote(t.text))
		} else {
			w = append(w, t.text)
		}
	}
	return strings.Join(w, " ")
}

// iscParse builds the statement tree from toks[*i:], up to the '}' that
// closes the enclosing block (depth > 0) or the end.
func iscParse(toks []iscToken, i *int, depth int) ([]iscStmt, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("line %d: blocks nested deeper than %d", toks[*i-1].line, maxDepth)
	}
	var out []iscStmt
	var cur []iscToken
	for *i < len(toks) {
		t := toks[*i]
		*i++
		switch {
		case t.is(";"):
			if len(cur) > 0 {
				out = append(out, iscStmt{words: cur})
			}
			cur = nil
		case t.is("{"):
			if len(cur) == 0 {
				cur = []iscToken{{text: "{", line: t.line}}
			}
			body, err := iscParse(toks, i, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, iscStmt{words: cur, block: true, body: body})
			cur = nil
		case t.is("}"):
			if depth == 0 {
				return nil, fmt.Errorf("line %d: a '}' that closes no block", t.line)
			}
			if len(cur) > 0 {
				return nil, fmt.Errorf("line %d: `%s` has no ';' before the '}'", cur[0].line, iscStmt{words: cur}.String())
			}
			return out, nil
		default:
			cur = append(cur, t)
		}
	}
	if depth > 0 {
		return nil, fmt.Errorf("a block is not closed at the end of the file")
	}
	if len(cur) > 0 {
		return nil, fmt.Errorf("line %d: `%s` has no ';' at the end of the file", cur[0].line, iscStmt{words: cur}.String())
	}
	return out, nil
}

// importedHost is a node read from a host declaration, with where it was.
type importedHost struct {
	Node
	decl string
	line int
}

func (h importedHost) where() string { return fmt.Sprintf("host %s (line %d)", h.decl, h.line) }

// ImportISC reads the host declarations of an ISC dhcpd.conf, wherever
// they are nested, into node table entries: `hardware ethernet` is the
// MAC, `fixed-address` the IP, and `option host-name` (else the
// declaration's name) the hostname. What an entry cannot carry (other
// statements in a host, hosts without an Ethernet address, includes,
// which are not followed) is returned as warnings, each naming its line.
// Two hosts with the same MAC, hostname or address are an error naming
// both, as is a file dhcpd itself would refuse to parse.
func ImportISC(r io.Reader) ([]Node, []string, error) {
	toks, err := iscTokens(r)
	if err != nil {
		return nil, nil, err
	}
	i := 0
	stmts, err := iscParse(toks, &i, 0)
	if err != nil {
		return nil, nil, err
	}
	var hosts []importedHost
	var warnings []string
	warn := func(line int, format string, a ...any) {
		warnings = append(warnings, fmt.Sprintf("line %d: ", line)+fmt.Sprintf(format, a...))
	}
	var walk func([]iscStmt)
	walk = func(stmts []iscStmt) {
		for _, s := range stmts {
			switch {
			case s.words[0].is("host") && s.block:
				if h, ok := iscHost(s, warn); ok {
					hosts = append(hosts, h)
				}
			case s.words[0].is("include"):
				warn(s.line(), "%s: not followed; import that file too for the hosts in it", s)
			case s.block:
				walk(s.body)
			}
		}
	}
	walk(stmts)
	if err := uniqueHosts(hosts); err != nil {
		return nil, warnings, err
	}
	list := make([]Node, len(hosts))
	for i, h := range hosts {
		list[i] = h.Node
	}
	if _, err := NewTable(list); err != nil {
		return nil, warnings, fmt.Errorf("the imported hosts: %w", err)
	}
	return list, warnings, nil
}

// iscHost reads one host declaration; ok is false when it has no Ethernet
// address for the node table to key on.
func iscHost(s iscStmt, warn func(int, string, ...any)) (h importedHost, ok bool) {
	if len(s.words) != 2 {
		warn(s.line(), "%s: want `host NAME {`; skipped", s)
		return h, false
	}
	h.decl, h.line = s.words[1].text, s.line()
	var optName string
	for _, st := range s.body {
		w := st.words
		switch {
		case st.block:
			warn(st.line(), "host %s: block `%s` not imported", h.decl, st.String())
		case w[0].is("hardware") && len(w) == 3 && w[1].is("ethernet"):
			mac, err := parseISCMAC(w[2].text)
			if err != nil {
				warn(st.line(), "host %s: %v; host skipped", h.decl, err)
				return h, false
			}
			h.MAC = mac
		case w[0].is("hardware"):
			warn(st.line(), "host %s: `%s` is not an Ethernet address; host skipped", h.decl, st.String())
			return h, false
		case w[0].is("fixed-address") && len(w) >= 2:
			a, err := netip.ParseAddr(w[1].text)
			if err != nil || !a.Is4() {
				warn(st.line(), "host %s: fixed-address %s is not an IPv4 address (bootd does not resolve names); no ip imported", h.decl, w[1].text)
				continue
			}
			h.IP = a.String()
			if len(w) > 2 {
				warn(st.line(), "host %s: only the first of the fixed addresses (%s) imported", h.decl, h.IP)
			}
		case w[0].is("option") && len(w) == 3 && w[1].is("host-name"):
			optName = w[2].text
		default:
			warn(st.line(), "host %s: `%s` not imported (the node table has no field for it)", h.decl, st.String())
		}
	}
	if h.MAC == "" {
		warn(h.line, "host %s: no `hardware ethernet`, which bootd keys nodes on; host skipped", h.decl)
		return h, false
	}
	switch {
	case optName != "":
		h.Hostname = importName(optName, h, "option host-name", warn)
	case h.decl != placeholderName(h.MAC):
		h.Hostname = importName(h.decl, h, "the declaration's name", warn)
	}
	return h, true
}

// importName makes a host name of one label from a dhcpd name, which may
// be a domain name.
func importName(name string, h importedHost, from string, warn func(int, string, ...any)) string {
	label, domain, _ := strings.Cut(name, ".")
	if !hostRE.MatchString(label) {
		warn(h.line, "host %s: %s %q is not a host name of letters, digits and '-'; no hostname imported", h.decl, from, name)
		return ""
	}
	if domain != "" {
		warn(h.line, "host %s: %s %q imported as %q (bootd's hostnames are one label)", h.decl, from, name, label)
	}
	return label
}

// parseISCMAC reads dhcpd's colon-separated hex, where a byte may be
// written with one digit (0:1:2:3:4:5).
func parseISCMAC(s string) (string, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return "", fmt.Errorf("hardware ethernet %s: want six bytes", s)
	}
	b := make([]string, 6)
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil || len(p) == 0 || len(p) > 2 {
			return "", fmt.Errorf("hardware ethernet %s: %q is not a hex byte", s, p)
		}
		b[i] = fmt.Sprintf("%02x", v)
	}
	return strings.Join(b, ":"), nil
}

// uniqueHosts refuses two hosts with the same MAC, hostname or address,
// naming both: dhcpd tolerates some of these, the node table does not.
func uniqueHosts(hosts []importedHost) error {
	seen := map[string]int{}
	for i, h := range hosts {
		for _, key := range []struct{ kind, v string }{
			{"hardware ethernet", h.MAC},
			{"hostname", strings.ToLower(h.Hostname)},
			{"fixed-address", h.IP},
		} {
			if key.v == "" {
				continue
			}
			k := key.kind + " " + key.v
			if j, dup := seen[k]; dup {
				return fmt.Errorf("%s and %s both have %s", hosts[j].where(), h.where(), k)
			}
			seen[k] = i
		}
	}
	return nil
}

package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	goyaml "github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
	"gopkg.in/yaml.v3"
)

// syntaxError explains why data is not YAML. yaml.v3, which reads the
// config, names the line where the enclosing mapping or list began (an
// unclosed "[" on line 3 is "line 2") and words some errors for the
// parser's author ("found character that cannot start any token" for a
// tab). goccy/go-yaml's parser points at the token at fault, so it is asked
// where; what it says is then put in the admin's words. When it finds
// nothing wrong, yaml.v3's own message is given, with its line.
func syntaxError(path string, data []byte, v3err error) error {
	msg := strings.TrimPrefix(v3err.Error(), "yaml: ")
	v3line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				v3line, msg = l, after
			}
		}
	}
	lines := strings.Split(string(data), "\n")
	at := func(line, col int) string {
		if col > 0 {
			return fmt.Sprintf("%s:%d:%d", path, line, col)
		}
		return fmt.Sprintf("%s:%d", path, line)
	}
	var se *goyaml.SyntaxError
	_, perr := parser.ParseBytes(data, 0)
	if !errors.As(perr, &se) || se.Token == nil || se.Token.Position == nil {
		if l, c := firstTab(lines, v3line, v3line); l > 0 && (strings.Contains(msg, "tab") || strings.Contains(msg, "cannot start any token")) {
			return fmt.Errorf("%s: a tab: YAML indents with spaces only", at(l, c))
		}
		if v3line > 0 {
			return fmt.Errorf("%s: %s", at(v3line, 0), msg)
		}
		return fmt.Errorf("%s: %s", path, msg)
	}
	line, col := se.Token.Position.Line, se.Token.Position.Column
	// A tab anywhere in the indentation between the two parsers' lines is
	// the cause of either complaint.
	from := line
	if v3line > 0 && v3line < from {
		from = v3line
	}
	if l, c := firstTab(lines, from, max(line, v3line)); l > 0 {
		return fmt.Errorf("%s: a tab: YAML indents with spaces only", at(l, c))
	}
	key := keyPath(lines, line)
	gmsg := se.Message
	switch {
	case strings.Contains(gmsg, "must be specified") || strings.Contains(gmsg, "end token"):
		open := se.Token
		if open.Type != token.SequenceStartType && open.Type != token.MappingStartType {
			open = unclosedFlow(string(data), line, col)
		}
		if open != nil {
			close := map[string]string{"[": "]", "{": "}"}[open.Value]
			return fmt.Errorf(`%s: %s: this %q is never closed: want "," or %q before line %d`,
				at(open.Position.Line, open.Position.Column), keyOr(keyPath(lines, open.Position.Line)), open.Value, close, line)
		}
	case strings.Contains(gmsg, "could not find end character of"):
		return fmt.Errorf("%s: %s: this quote is never closed", at(line, col), keyOr(key))
	case strings.Contains(gmsg, "map key-value is pre-defined"), strings.Contains(gmsg, "value is not allowed in this context"):
		// A plain value runs on into a deeper-indented line below it, and
		// the parser complains at the value: the key below is at fault.
		if line < len(lines) && keyLine.MatchString(lines[line]) && indentOf(lines[line]) > indentOf(lines[line-1]) {
			line, col = line+1, indentOf(lines[line])+1
		}
		above := keyLineAbove(lines, line)
		if above > 0 && col == indentOf(lines[line-1])+1 && indentOf(lines[line-1]) > indentOf(lines[above-1]) {
			// It belongs, as the admin meant it, beside the key above.
			key = keyPath(lines, above)
			if m := keyLine.FindStringSubmatch(lines[line-1]); m != nil {
				key = join(key[:max(strings.LastIndexByte(key, '.'), 0)], m[1])
			}
			return fmt.Errorf("%s: %s: indented deeper than the key above it (line %d); the keys of one mapping start in the same column, and a key's value goes after its \": \" or on the lines below it, indented",
				at(line, col), keyOr(key), above)
		}
	}
	first, _, _ := strings.Cut(gmsg, "\n")
	return fmt.Errorf("%s: %s: %s", at(line, col), keyOr(key), first)
}

func keyOr(k string) string {
	if k == "" {
		return "the top level"
	}
	return k
}

// firstTab finds a tab in the indentation of lines from..to (1-based),
// or at the start of a value, where YAML takes it for indentation too.
func firstTab(lines []string, from, to int) (line, col int) {
	for l := max(from, 1); l <= to && l <= len(lines); l++ {
		s := lines[l-1]
		lead := len(s) - len(strings.TrimLeft(s, " \t-"))
		if i := strings.IndexByte(s[:lead], '\t'); i >= 0 {
			return l, i + 1
		}
	}
	return 0, 0
}

// unclosedFlow returns the innermost "[" or "{" still open at line:col.
func unclosedFlow(src string, line, col int) *token.Token {
	var open []*token.Token
	for _, tk := range lexer.Tokenize(src) {
		p := tk.Position
		if p.Line > line || p.Line == line && p.Column >= col {
			break
		}
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			open = append(open, tk)
		case token.SequenceEndType, token.MappingEndType:
			if len(open) > 0 {
				open = open[:len(open)-1]
			}
		}
	}
	if len(open) == 0 {
		return nil
	}
	return open[len(open)-1]
}

// keyLine matches a line that holds a block mapping key: the key is group 1.
var keyLine = regexp.MustCompile(`^[ -]*([\w.][\w.-]*)\s*:(?:\s|$)`)

func indentOf(s string) int { return len(s) - len(strings.TrimLeft(s, " -")) }

// keyLineAbove returns the nearest line above line (1-based) holding a key.
func keyLineAbove(lines []string, line int) int {
	for l := line - 1; l >= 1; l-- {
		if keyLine.MatchString(lines[l-1]) {
			return l
		}
	}
	return 0
}

// keyPath guesses the dotted key path of line (1-based) from the keys of
// the lines above it that are indented less: good enough to name what an
// error is about in a file the parser could not read.
func keyPath(lines []string, line int) string {
	if line < 1 || line > len(lines) {
		return ""
	}
	var parts []string
	indent := indentOf(lines[line-1])
	if m := keyLine.FindStringSubmatch(lines[line-1]); m != nil {
		parts = append(parts, strings.TrimSpace(m[1]))
	}
	if strings.TrimSpace(lines[line-1]) == "" {
		indent = 1 << 30
	}
	for l := line - 1; l >= 1 && indent > 0; l-- {
		m := keyLine.FindStringSubmatch(lines[l-1])
		if m == nil {
			continue
		}
		if in := indentOf(lines[l-1]); in < indent {
			parts = append(parts, strings.TrimSpace(m[1]))
			indent = in
		}
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

// checkDuplicates refuses a key given twice in one mapping: yaml.v3 says
// so in a two-line "unmarshal errors" with neither the file nor the key's
// path, and a tree read without decoding keeps both silently.
func checkDuplicates(path string, n *yaml.Node, key string) error {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			k := key
			if n.Kind == yaml.SequenceNode {
				k = fmt.Sprintf("%s[%d]", key, i)
			}
			if err := checkDuplicates(path, c, k); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if first, dup := seen[k.Value]; dup {
				return fmt.Errorf("%s:%d: key %q given twice (first on line %d)", path, k.Line, join(key, k.Value), first)
			}
			seen[k.Value] = k.Line
			if err := checkDuplicates(path, n.Content[i+1], join(key, k.Value)); err != nil {
				return err
			}
		}
	}
	return nil
}

package config

import (
	"strings"
	"testing"
)

// The cases the issue reported: yaml.v3 names the line where the enclosing
// construct began, not the line at fault, and words some errors for the
// parser's author rather than for the admin.
func TestSyntaxErrorsNameTheLineAtFault(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unclosed [", "state_dir: /x\nnfs:\n  allow: [10.0.0.0/24\ninterface: eth0\n",
			`bootd.yaml:3:10: nfs.allow: this "[" is never closed`},
		{"unclosed { in a list", "nodes:\n  - {mac: \"52:54:00:00:00:01\", hostname: a\n  - {mac: \"52:54:00:00:00:02\"}\n",
			`bootd.yaml:2:5: nodes: this "{" is never closed`},
		{"key indented deeper", "state_dir: /x\nnfs:\n  listen: \"\"\n    allow: [1.2.3.4]\n",
			`bootd.yaml:4:5: nfs.allow: indented deeper than the key above it`},
		{"key indented one deeper", "state_dir: /x\nnfs:\n  listen: \"\"\n   allow: [1.2.3.4]\n",
			`bootd.yaml:4:4: nfs.allow: indented deeper than the key above it`},
		{"tab indent", "state_dir: /x\nnfs:\n\tallow: x\n",
			`bootd.yaml:3:1: a tab: YAML indents with spaces only`},
		{"tab after keys", "nfs:\n  listen: \"\"\n\tallow: [1.2.3.4]\n",
			`bootd.yaml:3:1: a tab: YAML indents with spaces only`},
		{"duplicate key", "state_dir: /x\nnfs:\n  listen: \"\"\n  allow: [1.2.3.4]\n  listen: \"0.0.0.0:2049\"\n",
			`bootd.yaml:5: key "nfs.listen" given twice (first on line 3)`},
		{"duplicate top-level key", "state_dir: /x\nnfs: {listen: \"\"}\nstate_dir: /y\n",
			`bootd.yaml:3: key "state_dir" given twice (first on line 1)`},
		{"unclosed quote", "nfs: {listen: \"\"}\ninterface: \"eth0\nstate_dir: /x\n",
			`bootd.yaml:2:12: interface: this quote is never closed`},
	}
	for _, c := range cases {
		_, err := Parse("bootd.yaml", []byte(c.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: Parse(%q):\n got %v\nwant prefix %s", c.name, c.yaml, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: a message of more than one line: %q", c.name, err)
		}
	}
}

func TestSyntaxErrorsMore(t *testing.T) {
	cases := []struct{ yaml, want string }{
		// A plain value runs on into the deeper line: the parser complains
		// at the value, but the key below is what is wrong.
		{"nfs:\n  listen: 0.0.0.0:2049\n    allow: [1.2.3.4]\n", `bootd.yaml:3:5: nfs.allow: indented deeper than the key above it (line 2)`},
		{"nodes:\n  - mac: \"52:54:00:00:00:01\"\n     hostname: y\n", `bootd.yaml:3:6: nodes.hostname: indented deeper than the key above it (line 2)`},
		{"nfs:\n  allow: [1.2.3.4}\n", `bootd.yaml:2:10: nfs.allow: this "[" is never closed`},
		{"nfs: {listen: \"\", allow: [1.2.3.4]\nstate_dir: /x\n", `bootd.yaml:1:6: nfs: this "{" is never closed: want "," or "}" before line 2`},
		{"nfs:\n  allow: [1.2.3.4]]\n", `bootd.yaml:2:19: nfs.allow: `},
	}
	for _, c := range cases {
		_, err := Parse("bootd.yaml", []byte(c.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Parse(%q):\n got %v\nwant prefix %s", c.yaml, err, c.want)
		}
	}
}

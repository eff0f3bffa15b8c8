package nodes

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"gopkg.in/yaml.v3"
)

// nodeFields are the YAML keys of a node entry, in the order bootd.yaml's
// documentation lists them.
var nodeFields = []string{"mac", "hostname", "ip", "image", "append"}

func (n Node) field(key string) string {
	switch key {
	case "mac":
		return n.MAC
	case "hostname":
		return n.Hostname
	case "ip":
		return n.IP
	case "image":
		return n.Image
	case "append":
		return n.Append
	}
	return ""
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

// entryYAML is one node as a YAML mapping, with only the fields it sets.
func entryYAML(n Node) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for _, k := range nodeFields {
		if v := n.field(k); v != "" {
			m.Content = append(m.Content, scalar(k), scalar(v))
		}
	}
	return m
}

func encodeYAML(doc *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	return b.Bytes(), nil
}

// NodesYAML renders nodes as bootd.yaml's `nodes:` list, in the order
// given and with the table's own keys, for an admin to paste.
func NodesYAML(list []Node) ([]byte, error) {
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, n := range list {
		seq.Content = append(seq.Content, entryYAML(n))
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{scalar("nodes"), seq}}
	return encodeYAML(doc)
}

// MergeYAML merges nodes into the `nodes:` list of a bootd.yaml and
// returns the new file. A node whose MAC is already listed gets the
// imported hostname and ip in its entry (its image, append and comments
// stay); the others are appended in the order given. The rest of the
// file, comments included, is kept, though yaml.v3 re-indents it. The
// merged list must make a valid node table.
func MergeYAML(config []byte, list []Node) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(config, &doc); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	if doc.Kind == 0 { // an empty file
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("reading the config: want a mapping of keys at the top")
	}
	top := doc.Content[0]
	var seq *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "nodes" {
			seq = top.Content[i+1]
		}
	}
	switch {
	case seq == nil:
		seq = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		top.Content = append(top.Content, scalar("nodes"), seq)
	case seq.Kind == yaml.ScalarNode && seq.Tag == "!!null":
		*seq = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", HeadComment: seq.HeadComment, LineComment: seq.LineComment}
	case seq.Kind != yaml.SequenceNode:
		return nil, fmt.Errorf("line %d: nodes: want a list", seq.Line)
	}
	byMAC := map[string]*yaml.Node{}
	for _, e := range seq.Content {
		var n Node
		if err := e.Decode(&n); err != nil {
			return nil, fmt.Errorf("line %d: nodes: %w", e.Line, err)
		}
		byMAC[canonMAC(n.MAC)] = e
	}
	for _, n := range list {
		e, ok := byMAC[n.MAC]
		if !ok {
			seq.Content = append(seq.Content, entryYAML(n))
			continue
		}
		for _, k := range []string{"hostname", "ip"} {
			if v := n.field(k); v != "" {
				setKey(e, k, v)
			}
		}
	}
	var merged []Node
	if err := seq.Decode(&merged); err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	if _, err := NewTable(merged); err != nil {
		return nil, fmt.Errorf("the merged node table: %w", err)
	}
	return encodeYAML(&doc)
}

// canonMAC is the MAC in the form NewTable keeps, whichever way an entry
// spells it.
func canonMAC(s string) string {
	if hw, err := net.ParseMAC(s); err == nil && len(hw) == 6 {
		return hw.String()
	}
	if m, err := parseISCMAC(s); err == nil {
		return m
	}
	return s
}

// setKey sets key to v in mapping m, in place if the key is there.
func setKey(m *yaml.Node, key, v string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1]
			old.Kind, old.Tag, old.Value, old.Style = yaml.ScalarNode, "!!str", v, 0
			return
		}
	}
	m.Content = append(m.Content, scalar(key), scalar(v))
}

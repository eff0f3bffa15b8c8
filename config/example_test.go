package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The example as installed loads, and what it writes out is the default.
func TestExampleIsTheDefault(t *testing.T) {
	cfg, err := Parse("/etc/bootd/bootd.yaml", Example)
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("the example warns: %q", w)
	}
	empty, err := Parse("/etc/bootd/bootd.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := effective(cfg), effective(empty); !reflect.DeepEqual(a, b) {
		t.Errorf("the example's values are not the defaults:\n%s\n---\n%s", a[0], b[0])
	}
	// What a fresh install lacks is said, and only that.
	err = cfg.CheckServe()
	if err == nil || strings.Count(err.Error(), "\n") != 1 || !strings.Contains(err.Error(), "nfs.allow") || !strings.Contains(err.Error(), "interface") {
		t.Errorf("CheckServe of the example: %v", err)
	}
}

// commented is a setting to uncomment: "#" right before the YAML, where an
// explanation has "# ".
var commented = regexp.MustCompile(`(?m)^(\s*)#([^\s#])`)

// Every key is in the example, set or commented, and what is commented is
// valid when uncommented.
func TestExampleDocumentsEveryKey(t *testing.T) {
	all := commented.ReplaceAll(Example, []byte("$1$2"))
	cfg, err := Parse("uncommented.yaml", all)
	if err != nil {
		t.Fatalf("the example with every setting uncommented: %v\n%s", err, all)
	}
	if err := cfg.CheckServe(); err != nil {
		t.Errorf("uncommented, the example cannot serve: %v", err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(all, &tree); err != nil {
		t.Fatal(err)
	}
	keys := yamlKeys(reflect.TypeOf(Config{}), "")
	if len(keys) < 60 {
		t.Fatalf("only %d keys found in Config: %q", len(keys), keys)
	}
	for _, key := range keys {
		if !holds(tree, key, true) {
			t.Errorf("%s is not in config/bootd.yaml", key)
		}
	}
	loaders, _ := tree["tftp"].(map[string]any)["loaders"].(map[string]any)
	for name := range DefaultLoaders() {
		if _, ok := loaders[name]; !ok {
			t.Errorf("tftp.loaders.%s is not in config/bootd.yaml", name)
		}
	}
}

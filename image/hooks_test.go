package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestHookRunsTheFileChecked: `--hook NAME` without a slash is checked as
// ./NAME; it must run ./NAME too, not a NAME found in $PATH.
func TestHookRunsTheFileChecked(t *testing.T) {
	work, bin, root := t.TempDir(), t.TempDir(), t.TempDir()
	script := func(dir, who string) {
		if err := os.WriteFile(filepath.Join(dir, "site-hook"), []byte("#!/bin/sh\necho "+who+" > \"$1/hook-ran\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script(work, "the-checked-one")
	script(bin, "one-from-PATH")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Chdir(work)

	hooks, err := resolveHooks([]string{"site-hook"})
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) != 1 || hooks[0] != filepath.Join(work, "site-hook") {
		t.Errorf("hooks resolved to %q, want %s", hooks, filepath.Join(work, "site-hook"))
	}
	var out bytes.Buffer
	if err := runHooks(context.Background(), hooks, root, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if b, _ := os.ReadFile(filepath.Join(root, "hook-ran")); string(b) != "the-checked-one\n" {
		t.Errorf("ran %q, want the hook in the current directory", b)
	}
	// A name that is not a path is never looked up in $PATH, even if a
	// caller forgets to resolve it.
	os.Remove(filepath.Join(root, "hook-ran"))
	err = runHooks(context.Background(), []string{"site-hook"}, root, &out)
	if b, _ := os.ReadFile(filepath.Join(root, "hook-ran")); string(b) == "one-from-PATH\n" || err == nil {
		t.Errorf("an unresolved hook name: %v, ran %q", err, b)
	}
}

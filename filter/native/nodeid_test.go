package main

import (
	"errors"
	"testing"
)

// TestNodeIDFromArgs finds the node id where Envoy does: --service-node
// over --config-yaml over the bootstrap file, in YAML or JSON.
func TestNodeIDFromArgs(t *testing.T) {
	files := map[string]string{
		"/b.yaml":  "admin: {}\nnode:\n  id: \"edge-a\"\n  cluster: directpipe\n",
		"/b.json":  `{"node": {"id": "edge-j"}}`,
		"/none":    "admin: {}\n",
		"/bad":     "node: [",
		"/flow":    "admin: {}\nnode: {cluster: c, id: 'edge-f'}\n",
		"/nested":  "node:\n  metadata:\n    id: not-this\n  id: edge-n # the id\n",
		"/later":   "node:\n  cluster: c\nstatic_resources:\n  id: not-this\n",
		"/missing": "",
	}
	read := func(p string) ([]byte, error) {
		if p == "/missing" {
			return nil, errors.New("no such file")
		}
		return []byte(files[p]), nil
	}
	for _, tc := range []struct {
		args []string
		want string
		ok   bool
	}{
		{[]string{"envoy", "-c", "/b.yaml", "--log-level", "info"}, "edge-a", true},
		{[]string{"envoy", "--config-path=/b.json"}, "edge-j", true},
		{[]string{"envoy", "-c", "/b.yaml", "--service-node", "edge-s"}, "edge-s", true},
		{[]string{"envoy", "--service-node=edge-s", "-c", "/b.yaml"}, "edge-s", true},
		{[]string{"envoy", "-c", "/b.yaml", "--config-yaml", "node: {id: edge-y}"}, "edge-y", true},
		{[]string{"envoy", "-c", "/b.yaml", "--config-yaml", "admin: {}"}, "edge-a", true},
		{[]string{"envoy", "-c", "/flow"}, "edge-f", true},
		{[]string{"envoy", "-c", "/nested"}, "edge-n", true},
		{[]string{"envoy", "-c", "/later"}, "", false},
		{[]string{"envoy", "-c", "/none"}, "", false},
		{[]string{"envoy", "-c", "/bad"}, "", false},
		{[]string{"envoy", "-c", "/missing"}, "", false},
		{[]string{"envoy"}, "", false},
		{[]string{"envoy", "-c"}, "", false},
	} {
		got, err := nodeIDFromArgs(tc.args, read)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %q %v, want %q (ok %v)", tc.args, got, err, tc.want, tc.ok)
		}
	}
}

// TestReadBoundedRefusesLongFiles: the module never reads more than its
// bound of a file it was pointed at.
func TestReadBoundedRefusesLongFiles(t *testing.T) {
	if _, err := readBounded("/proc/self/cmdline", 1); err == nil {
		t.Fatal("a command line longer than 1 byte was read")
	}
	if b, err := readBounded("/proc/self/cmdline", maxCmdline); err != nil || len(b) == 0 {
		t.Fatalf("the test's own command line: %d bytes, %v", len(b), err)
	}
}

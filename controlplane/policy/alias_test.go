package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// billionLaughs is a policy whose aliases expand to 10^8 header matchers
// from about 80 KB: routes that are each an alias of one route, whose
// header list is 10,000 aliases of one matcher. The schema has no list of
// lists, so two levels of repeated messages are the deepest nesting a
// policy can expand; with lists this long they are plenty.
func billionLaughs() []byte {
	const n = 10_000
	var b strings.Builder
	b.WriteString("listeners: [{ name: public, address: 127.0.0.1:10000 }]\n")
	b.WriteString("backends: [{ name: b, endpoints: [127.0.0.1:8081] }]\n")
	b.WriteString("routes:\n  - &r\n    name: r\n    kind: http\n    backend: b\n    match:\n      prefix: /\n      headers: [&h { name: x-a, present: true }")
	b.WriteString(strings.Repeat(", *h", n))
	b.WriteString("]\n")
	b.WriteString(strings.Repeat("  - *r\n", n))
	return []byte(b.String())
}

// TestDecodeRefusesAliases: an alias anywhere in a policy is refused with
// its line, before anything is expanded, whether the file is read by the
// control plane (LoadFile) or by dpctl (Decode).
func TestDecodeRefusesAliases(t *testing.T) {
	for _, tt := range []struct {
		name, doc, want string
	}{
		{"billion laughs", string(billionLaughs()), "line 10: YAML aliases (*h) are not allowed"},
		{"alias of a scalar", `
listeners: [{ name: public, address: &a 127.0.0.1:10000 }]
backends: [{ name: b, endpoints: [*a] }]
`, "line 3: YAML aliases (*a) are not allowed"},
		{"merge key", `
listeners:
  - &l { name: public, address: 127.0.0.1:10000 }
  - <<: *l
    name: other
`, "line 4: YAML aliases (*l) are not allowed"},
		{"alias as a mapping key", `
listeners: [{ &k name: public, address: 127.0.0.1:10000 }]
backends: [{ *k : b }]
`, "line 3: YAML aliases (*k) are not allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode: %v, want an error containing %q", err, tt.want)
			}
			path := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(path, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadFile: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Anchors without aliases are plain YAML and still load.
	if _, err := Parse([]byte(strings.Replace(validPolicy, "name: voice\n    endpoints", "name: &v voice\n    endpoints", 1))); err != nil {
		t.Errorf("an anchor without an alias: %v", err)
	}
}

// TestReadFileBounded: a policy path that names something larger than
// MaxPolicyBytes (or endless, like a device) is refused after reading at
// most one byte more than the limit.
func TestReadFileBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, make([]byte, MaxPolicyBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"large file": path, "endless device": "/dev/zero"} {
		if _, err := LoadFile(file); err == nil || !strings.Contains(err.Error(), "more than the") {
			t.Errorf("%s: %v, want a size error", name, err)
		}
	}
}

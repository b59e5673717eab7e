package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// TestMarshalRoundTrips: every policy the repository holds, and one full
// of strings YAML could misread, is decoded back from Marshal's YAML as
// the same policy.
func TestMarshalRoundTrips(t *testing.T) {
	files, err := filepath.Glob("../translate/testdata/*.in.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	files = append(files, "../../examples/policy.yaml")
	cases := map[string]*policyv1.Policy{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cases[filepath.Base(f)] = p
	}
	tricky := &policyv1.Policy{}
	for i, s := range []string{
		"", "yes", "No", "on", "OFF", "y", "n", "true", "null", "~", "123", "1.5", "-1", "+1", "0x1f", "1e3", ".inf", ".nan", "NaN",
		"a: b", "a:b", "#comment", "a #b", "- x", "[x]", "{x}", "*alias", "&anchor", "!tag", "|", ">", "%x", "@x", "`x`",
		" lead", "trail ", "two  spaces", "tab\there", "line\nbreak", "cr\rx", `quote"s`, `back\slash`, "'single'",
		"\x7f", "\u0085", "\u00a0", "\u2028", "\ufeff", "\ufffd", "é", "日本", "🎙", "2001-12-14", "/v1/voice", "x-api-key",
	} {
		tricky.Routes = append(tricky.Routes, &policyv1.Route{Name: fmt.Sprintf("r%d", i), Backend: s, Auth: s})
		tricky.Backends = append(tricky.Backends, &policyv1.Backend{Name: s, Endpoints: []string{s, "x"}})
	}
	cases["tricky strings"] = tricky
	cases["empty"] = &policyv1.Policy{}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(out)
			if err != nil {
				t.Fatalf("%v in:\n%s", err, out)
			}
			if !proto.Equal(p, back) {
				t.Fatalf("round trip changed the policy:\n%s", out)
			}
		})
	}
}

// TestMarshalIsPlainWhereItCan keeps the file readable: names, paths and
// header names unquoted, order of the schema's fields kept.
func TestMarshalIsPlainWhereItCan(t *testing.T) {
	p, err := Decode([]byte(`listeners: [{ name: public, address: "127.0.0.1:10000" }]
routes: [{ name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice }]
backends: [{ name: voice, endpoints: ["10.0.0.1:8080"] }]
`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `listeners:
- name: public
  address: "127.0.0.1:10000"
routes:
- name: voice
  match:
    path: /v1/voice
  kind: websocket
  backend: voice
backends:
- name: voice
  endpoints:
  - "10.0.0.1:8080"
`
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	if strings.Contains(string(out), "\t") {
		t.Error("tabs in YAML")
	}
}

package docs

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite policy-reference.md from the schema")

const schemaPath = "api/directpipe/policy/v1/policy.proto"

// TestPolicyReference fails when policy-reference.md is not what the
// schema's comments say today: the reference cannot drift from the schema.
func TestPolicyReference(t *testing.T) {
	src, err := os.ReadFile("../" + schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := PolicyReference(src, schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("policy-reference.md", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("policy-reference.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("docs/policy-reference.md is stale: run `go test ./docs -run TestPolicyReference -update` (or `make generate`) and commit it")
	}
}

func TestParseProto(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    string // Name:field/type,... per message
		wantErr string
	}{
		{
			name: "fields, comments, oneof and map",
			src: `syntax = "proto3";
// file comment, not a message's

// A is a thing.
message A {
  // The name.
  string name = 1;
  repeated B bs = 2; // trailing
  map<string, string> labels = 3;
  oneof source {
    bool on = 4;
  }
}
message B {}
`,
			want: "A:name/string,bs/B[],labels/string{},on/bool(source);B:",
		},
		{name: "enum is not read", src: "enum E {\n  X = 0;\n}\n", wantErr: `does not read "enum E {"`},
		{name: "nested message is not read", src: "message A {\n  message B {\n  }\n}\n", wantErr: `does not read "message B {"`},
		{name: "unclosed", src: "message A {\n  string a = 1;\n", wantErr: "not closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := ParseProto([]byte(tt.src))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, m := range msgs {
				var fs []string
				for _, f := range m.Fields {
					s := f.Name + "/" + f.Type
					if f.Repeated {
						s += "[]"
					}
					if f.MapKey != "" {
						s += "{}"
					}
					if f.OneOf != "" {
						s += "(" + f.OneOf + ")"
					}
					fs = append(fs, s)
				}
				parts = append(parts, m.Name+":"+strings.Join(fs, ","))
			}
			if got := strings.Join(parts, ";"); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if len(msgs) > 0 && strings.Join(msgs[0].Comment, " ") != "A is a thing." {
				t.Errorf("comment of A = %q", msgs[0].Comment)
			}
		})
	}
}

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
		{
			name: "enum, nested message, optional and options",
			src: `message A {
  // Kinds.
  enum Kind {
    KIND_UNSPECIFIED = 0;
    // A stream.
    STREAM = 1 [deprecated = true];
  }
  message B {
    optional string s = 1;
  }
  reserved 7;
  Kind kind = 1;
  B b = 2 [json_name = "bee"];
}
`,
			want: "A:kind/Kind,b/B;A.Kind:KIND_UNSPECIFIED/,STREAM/;A.B:s/string",
		},
		{name: "service is not read", src: "service S {\n}\n", wantErr: `does not read "service S {"`},
		{name: "oneof outside a message", src: "oneof o {\n}\n", wantErr: "outside a message"},
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
			if tt.name == "fields, comments, oneof and map" && strings.Join(msgs[0].Comment, " ") != "A is a thing." {
				t.Errorf("comment of A = %q", msgs[0].Comment)
			}
		})
	}
}

func TestReferenceLinksNestedTypes(t *testing.T) {
	src := []byte("message A {\n  message B {\n  }\n  B b = 1;\n  repeated A.B bs = 2;\n}\n")
	got, err := PolicyReference(src, "x.proto")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## A.B", "| `b` | [A.B](#ab) |", "| `bs` | list of [A.B](#ab) |"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("reference lacks %q:\n%s", want, got)
		}
	}
}

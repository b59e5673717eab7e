package wirebound

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// emptyEntries is n empty messages in field num, two bytes each on the
// wire: the cheapest way to make a decoder allocate.
func emptyEntries(num protowire.Number, n int) []byte {
	var b []byte
	for range n {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, 0)
	}
	return b
}

// admin are the admin API's limits, which these cases were written for.
var admin = Limits{ListEntries: 10_000, DecodedBytes: 64 << 20}

func TestCheck(t *testing.T) {
	valid, err := proto.Marshal(&policyv1.Policy{
		Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}},
		Routes:    []*policyv1.Route{{Name: "voice", Kind: "websocket", Backend: "voice", Match: &policyv1.RouteMatch{Prefix: "/v1/voice"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A route holding n empty header matchers.
	headers := func(n int) []byte {
		route := protowire.AppendTag(nil, 3, protowire.BytesType) // match
		return protowire.AppendBytes(route, emptyEntries(4, n))   // match.headers
	}
	routesOf := func(route []byte, n int) []byte {
		var b []byte
		for range n {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendBytes(b, route)
		}
		return b
	}
	tests := []struct {
		name string
		wire []byte
		want string // "" for accepted
	}{
		{"a valid policy", valid, ""},
		{"the most routes a policy may have", emptyEntries(2, admin.ListEntries), ""},
		{"one route more", emptyEntries(2, admin.ListEntries+1), "routes: more than the 10000 entries a list may have"},
		{"a nested list over the bound", routesOf(headers(admin.ListEntries+1), 1), "routes: match: headers: more than the 10000 entries"},
		{"many short nested lists", routesOf(headers(5000), 120), "would take more than the 64 MiB a request may take decoded"},
		{"bytes that do not decode are left to the decoder", []byte{0xff, 0xff, 0xff}, ""},
		{"a truncated message is left to the decoder", valid[:len(valid)-3], ""},
	}
	md := (&policyv1.Policy{}).ProtoReflect().Descriptor()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := admin.Check(tt.wire, md)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("%v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestCheckAllocatesNothingPerEntry: refusing 4 MiB of empty routes
// costs a few allocations, not a struct per route.
func TestCheckAllocatesNothingPerEntry(t *testing.T) {
	wire := bytes.Repeat([]byte{0x12, 0x00}, 2<<20)
	md := (&policyv1.Policy{}).ProtoReflect().Descriptor()
	allocs := testing.AllocsPerRun(3, func() {
		if admin.Check(wire, md) == nil {
			t.Fatal("4 MiB of empty routes accepted")
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations to refuse empty routes", allocs)
	}
}

package translate

import (
	"slices"
	"testing"

	"github.com/directpipe/directpipe/controlplane/policy"
)

func TestDiff(t *testing.T) {
	p, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if got := Diff(before, before); len(got) != 0 {
		t.Errorf("Diff of a translation with itself = %v", got)
	}
	p.Routes = p.Routes[:1]                                                     // drop the REST route
	p.Backends[0].Endpoints = append(p.Backends[0].Endpoints, "127.0.0.1:8090") // voice gets an endpoint
	after, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{"RouteConfiguration", "public", Modified},
		{"ClusterLoadAssignment", "voice", Modified},
		{"TypedExtensionConfig", HandshakeFilterName, Modified},
	}
	got := Diff(before, after)
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %v, want %v", got, want)
	}
	all := Diff(nil, after)
	if len(all) != 1+1+2+2+1 {
		t.Errorf("Diff(nil, x) = %d changes, want every resource added: %v", len(all), all)
	}
}

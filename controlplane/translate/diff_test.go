package translate

import (
	"slices"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xdstype"
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
	if got := mustDiff(t, before, before); len(got) != 0 {
		t.Errorf("Diff of a translation with itself = %v", got)
	}
	p.Routes = slices.DeleteFunc(p.Routes, func(r *policyv1.Route) bool { return r.GetName() == "api" }) // drop the REST route
	p.Backends[0].Endpoints = append(p.Backends[0].Endpoints, "127.0.0.1:8090")                          // voice gets an endpoint
	after, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{"ClusterLoadAssignment", "voice", Modified},
		// The filter config does not list routes: dropping one leaves it.
		{"RouteConfiguration", "public", Modified},
	}
	got := mustDiff(t, before, after)
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %v, want %v", got, want)
	}
	all := mustDiff(t, nil, after)
	// Listeners: public, the tcp route's and the deny listener; routes:
	// public; clusters: voice, rest and deny; endpoints: voice, rest;
	// extension configs: the HTTP and the tcp filter's.
	if len(all) != 3+1+3+2+2 {
		t.Errorf("Diff(nil, x) = %d changes, want every resource added: %v", len(all), all)
	}
}

func mustDiff(t *testing.T, old, new xdstype.Resources) []Change {
	t.Helper()
	changes, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	return changes
}

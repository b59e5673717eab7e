package translate

import (
	"bytes"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
)

// Action says how a resource changed between two translations.
type Action string

const (
	Added    Action = "added"
	Modified Action = "modified"
	Removed  Action = "removed"
)

// Change is one resource that differs between two translations.
type Change struct {
	Type   string // Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, TypedExtensionConfig
	Name   string
	Action Action
}

// Diff lists the resources that differ from old to new, by type then name.
// A nil old means everything is added.
func Diff(old, new *Resources) []Change {
	if old == nil {
		old = &Resources{}
	}
	var out []Change
	for i, list := range new.all() {
		out = append(out, diffList(TypeNames[i], *old.all()[i], *list)...)
	}
	return out
}

// TypeNames are the short type names in the order of Resources' lists.
var TypeNames = []string{"Listener", "RouteConfiguration", "Cluster", "ClusterLoadAssignment", "TypedExtensionConfig"}

func diffList(typ string, old, new []types.Resource) []Change {
	before := map[string][]byte{}
	for _, r := range old {
		before[name(r)] = marshal(r)
	}
	var out []Change
	seen := map[string]bool{}
	for _, r := range new {
		n := name(r)
		seen[n] = true
		prev, ok := before[n]
		switch {
		case !ok:
			out = append(out, Change{typ, n, Added})
		case !bytes.Equal(prev, marshal(r)):
			out = append(out, Change{typ, n, Modified})
		}
	}
	for n := range before {
		if !seen[n] {
			out = append(out, Change{typ, n, Removed})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func marshal(r types.Resource) []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	return b
}

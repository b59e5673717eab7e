package translate

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/directpipe/directpipe/controlplane/xdstype"
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
	Type   string // the message name: Listener, RouteConfiguration, Cluster, ...
	Name   string
	Action Action
}

// Diff lists the resources that differ from old to new, by type in the
// order of xdstype.Kinds, then by name. A nil old means everything is added.
func Diff(old, new xdstype.Resources) ([]Change, error) {
	var out []Change
	for _, k := range xdstype.Kinds() {
		changes, err := diffList(k.Name(), old[k.URL], new[k.URL])
		if err != nil {
			return nil, err
		}
		out = append(out, changes...)
	}
	return out, nil
}

func diffList(typ string, old, new []types.Resource) ([]Change, error) {
	// The two sides are marshalled at once: at 10,000 routes each is a
	// route table of tens of milliseconds, and an apply waits for both.
	before := map[string][]byte{}
	oldDone := make(chan error, 1)
	go func() {
		for _, r := range old {
			b, err := marshal(r)
			if err != nil {
				oldDone <- err
				return
			}
			before[name(r)] = b
		}
		oldDone <- nil
	}()
	after := make([][]byte, len(new))
	var newErr error
	for i, r := range new {
		if after[i], newErr = marshal(r); newErr != nil {
			break
		}
	}
	if err := <-oldDone; err != nil {
		return nil, err
	}
	if newErr != nil {
		return nil, newErr
	}
	var out []Change
	seen := map[string]bool{}
	for i, r := range new {
		n := name(r)
		seen[n] = true
		prev, ok := before[n]
		if !ok {
			out = append(out, Change{typ, n, Added})
			continue
		}
		if !bytes.Equal(prev, after[i]) {
			out = append(out, Change{typ, n, Modified})
		}
	}
	for n := range before {
		if !seen[n] {
			out = append(out, Change{typ, n, Removed})
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func marshal(r types.Resource) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("translate: diff %T %q: %w", r, name(r), err)
	}
	return b, nil
}

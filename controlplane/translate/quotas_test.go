package translate

import (
	"reflect"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/contract"
)

func TestEnvoyQuotas(t *testing.T) {
	q := &policyv1.Quotas{
		MaxStreams:         10,
		IdentityMaxStreams: map[string]uint32{"gold": 100, "internal": 0, "tiny": 1},
		Handshakes:         &policyv1.HandshakeRate{PerSecond: 5},
	}
	tests := []struct {
		envoys int
		want   *contract.Quotas
	}{
		{0, &contract.Quotas{MaxStreams: 10, Identities: map[string]uint32{"gold": 100, "internal": 0, "tiny": 1}, Handshakes: &contract.Rate{PerSecond: 5, Burst: 5}}},
		{1, &contract.Quotas{MaxStreams: 10, Identities: map[string]uint32{"gold": 100, "internal": 0, "tiny": 1}, Handshakes: &contract.Rate{PerSecond: 5, Burst: 5}}},
		{2, &contract.Quotas{MaxStreams: 5, Identities: map[string]uint32{"gold": 50, "internal": 0, "tiny": 1}, Handshakes: &contract.Rate{PerSecond: 3, Burst: 3}}},
		{3, &contract.Quotas{MaxStreams: 4, Identities: map[string]uint32{"gold": 34, "internal": 0, "tiny": 1}, Handshakes: &contract.Rate{PerSecond: 2, Burst: 2}}},
		{20, &contract.Quotas{MaxStreams: 1, Identities: map[string]uint32{"gold": 5, "internal": 0, "tiny": 1}, Handshakes: &contract.Rate{PerSecond: 1, Burst: 1}}},
	}
	for _, tt := range tests {
		got := envoyQuotas(q, tt.envoys, nil)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%d Envoys: %+v %+v, want %+v %+v", tt.envoys, got, got.Handshakes, tt.want, tt.want.Handshakes)
		}
		// The bound docs/admission.md states: the shares add up to at
		// most the quota plus envoys-1.
		if n := max(tt.envoys, 1); int(got.MaxStreams)*n > int(q.MaxStreams)+n-1 {
			t.Errorf("%d Envoys: shares of %d add up to %d, more than %d+%d", n, got.MaxStreams, int(got.MaxStreams)*n, q.MaxStreams, n-1)
		}
	}
	if envoyQuotas(nil, 3, nil) != nil {
		t.Error("no quotas made some")
	}
}

func known(node string, live uint32) NodeLive { return NodeLive{Node: node, Live: live, Known: true} }

func TestSplitByUse(t *testing.T) {
	unknown := NodeLive{Node: "c"}
	tests := []struct {
		name  string
		quota uint32
		nodes []NodeLive
		want  *contract.Split // nil: the even split
	}{
		{"no streams anywhere is the even split", 4, []NodeLive{known("a", 0), known("b", 0)}, nil},
		{"streams where the even split puts them", 4, []NodeLive{known("a", 1), known("b", 1)}, nil},
		{"all on one Envoy: it gets the free remainder's part", 4, []NodeLive{known("a", 2), known("b", 0)},
			&contract.Split{Rest: 1, Nodes: map[string]uint32{"a": 3}}},
		{"three on one Envoy: it may reach the quota", 4, []NodeLive{known("a", 3), known("b", 0)},
			&contract.Split{Rest: 1, Nodes: map[string]uint32{"a": 4}}},
		{"at the quota: what each holds, and 1 elsewhere", 4, []NodeLive{known("a", 4), known("b", 0)},
			&contract.Split{Rest: 1, Nodes: map[string]uint32{"a": 4}}},
		{"over the quota (counts in flight): nothing more where it holds streams", 4, []NodeLive{known("a", 4), known("b", 1)},
			&contract.Split{Rest: 1, Nodes: map[string]uint32{"a": 4, "b": 1}}},
		{"an unknown Envoy keeps, and is counted at, the even share", 9, []NodeLive{known("a", 3), known("b", 0), unknown},
			&contract.Split{Rest: 2, Nodes: map[string]uint32{"a": 5, "c": 3}}},
		{"only unknown Envoys: the even split", 9, []NodeLive{{Node: "a"}, {Node: "b"}}, nil},
		{"no limit", 0, []NodeLive{known("a", 3)}, nil},
		{"one Envoy holds them all", 10, []NodeLive{known("a", 7)}, nil},
		{"many Envoys, a quota smaller than them", 3, []NodeLive{known("a", 2), known("b", 0), known("c", 0), known("d", 0)},
			&contract.Split{Rest: 1, Nodes: map[string]uint32{"a": 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitByUse(tt.quota, tt.nodes)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("split = %+v, want %+v", got, tt.want)
			}
			// The bound docs/admission.md states, when the counts are
			// current and within the quota: the shares add up to at most
			// quota + Envoys - 1.
			var held, sum uint64
			for _, n := range tt.nodes {
				held += uint64(n.Live)
				switch {
				case got == nil:
					sum += uint64(share(tt.quota, len(tt.nodes)))
				case got.Nodes[n.Node] > 0:
					sum += uint64(got.Nodes[n.Node])
				default:
					sum += uint64(got.Rest)
				}
			}
			if tt.quota > 0 && held <= uint64(tt.quota) && sum > uint64(tt.quota)+uint64(len(tt.nodes))-1 {
				t.Fatalf("shares add up to %d, more than %d + %d - 1", sum, tt.quota, len(tt.nodes))
			}
		})
	}
}

// TestSplitByUseSettles plays an identity opening streams one at a time
// through one of two Envoys while the other holds none, the split served
// again after each: it reaches its whole quota there, never more, and the
// fleet's shares never add up to more than quota + Envoys - 1.
func TestSplitByUseSettles(t *testing.T) {
	const quota = 4
	var onA uint32
	for {
		s := splitByUse(quota, []NodeLive{known("a", onA), known("b", 0)})
		shareA, shareB := share(quota, 2), share(quota, 2)
		if s != nil {
			shareA, shareB = s.Rest, s.Rest
			if n, ok := s.Nodes["a"]; ok {
				shareA = n
			}
		}
		if shareA+shareB > quota+1 {
			t.Fatalf("with %d on a: shares %d and %d", onA, shareA, shareB)
		}
		if onA >= shareA {
			break
		}
		onA++
	}
	if onA != quota {
		t.Fatalf("the identity reached %d streams on one Envoy, want its quota %d", onA, quota)
	}
}

func TestEnvoyQuotasByUse(t *testing.T) {
	q := &policyv1.Quotas{MaxStreams: 4, IdentityMaxStreams: map[string]uint32{"gold": 10, "free": 0}}
	use := &QuotaUse{
		Nodes: []string{"a", "b"},
		Live: map[string]map[string]map[string]uint32{"voice": {
			"alice": {"a": 3},
			"gold":  {"b": 1},
			"free":  {"a": 50},
			"bob":   {"a": 1, "b": 1},
		}},
	}
	got := envoyQuotas(q, 2, use.policy("voice"))
	want := map[string]*contract.Split{
		"alice": {Rest: 1, Nodes: map[string]uint32{"a": 4}},
		"gold":  {Rest: 5, Nodes: map[string]uint32{"b": 6}},
	}
	if !reflect.DeepEqual(got.Split, want) || got.MaxStreams != 2 {
		t.Fatalf("split %+v (max_streams %d), want %+v", got.Split, got.MaxStreams, want)
	}
	if got := envoyQuotas(q, 2, use.policy("other")); got.Split != nil {
		t.Fatalf("a policy with no streams split: %+v", got.Split)
	}
}

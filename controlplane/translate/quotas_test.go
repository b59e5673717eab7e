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
		got := envoyQuotas(q, tt.envoys)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%d Envoys: %+v %+v, want %+v %+v", tt.envoys, got, got.Handshakes, tt.want, tt.want.Handshakes)
		}
		// The bound docs/admission.md states: the shares add up to at
		// most the quota plus envoys-1.
		if n := max(tt.envoys, 1); int(got.MaxStreams)*n > int(q.MaxStreams)+n-1 {
			t.Errorf("%d Envoys: shares of %d add up to %d, more than %d+%d", n, got.MaxStreams, int(got.MaxStreams)*n, q.MaxStreams, n-1)
		}
	}
	if envoyQuotas(nil, 3) != nil {
		t.Error("no quotas made some")
	}
}

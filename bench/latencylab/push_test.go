//go:build linux

package latencylab

import (
	"testing"

	"github.com/directpipe/directpipe/controlplane/policy"
)

// TestLargePoliciesAreValid: the policies the push section applies must
// be ones the control plane takes, in every configuration the lab runs
// (the full run once added 10,000 routes to the small policy's five, and
// its first refusal ended the run after 17 minutes).
func TestLargePoliciesAreValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"default", Default()},
		{"tiny", Tiny()},
		{"beyond the bound", Config{Push: PushConfig{LargeRoutes: policy.MaxRoutes + 50}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &stack{t: t, keys: newSigningKeys(t), listen: "127.0.0.1:10000", raw: "127.0.0.1:10001", rawAuth: "127.0.0.1:10002"}
			s.body = s.smallPolicy("127.0.0.1:10003", "127.0.0.1:10004")
			n, added := s.largeRouteCount(tc.cfg.Push.LargeRoutes)
			if want := min(tc.cfg.Push.LargeRoutes, policy.MaxRoutes); n != want {
				t.Errorf("large policy of %d routes, want %d", n, want)
			}
			for _, body := range []string{s.body, s.withLargeRoutes(added, 0)} {
				p, err := policy.Parse([]byte(body))
				if err != nil {
					t.Fatal(err)
				}
				if body != s.body && len(p.GetRoutes()) != n {
					t.Errorf("large policy holds %d routes, want %d", len(p.GetRoutes()), n)
				}
			}
		})
	}
}

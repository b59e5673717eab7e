package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestAPIApplyReachesEveryNode: one apply through the admin API reaches a
// real Envoy, which ACKs it and serves the new route, and 100 simulated
// nodes that follow the control plane beside it; dpctl status shows every
// one of them SYNCED at the new snapshot's versions. (How long that takes
// is `make bench`'s business, part push.)
func TestAPIApplyReachesEveryNode(t *testing.T) {
	const simulated = 100
	s := newStack(t, false)
	s.waitStatus("SYNCED", "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := testkit.FollowNodes(ctx, s.cp.XDSAddr(), simulated, "follower", everything(s.cp)); err != nil {
		t.Fatal(err)
	}

	oldRev, next := s.stageRoutes(route{Name: "pushed", Prefix: "/routes/pushed"})
	before := s.cp.XDS().Versions()
	if code, out, errs := s.dpctl("policy", "apply", "-f", next, "--revision", oldRev); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	latest := s.cp.XDS().Versions()
	if latest[resource.RouteType] == before[resource.RouteType] {
		t.Fatal("the apply did not change the routes")
	}
	// The new route carries its policy itself: the filter config stays.
	if latest[resource.ExtensionConfigType] != before[resource.ExtensionConfigType] {
		t.Error("a route added changed the filter config")
	}

	// Every node, the Envoy and the followers, ACKs the new versions.
	var last string
	waitFor(t, 30*time.Second, func() (bool, string) {
		code, out, errs := s.dpctl("-o", "json", "status")
		if code != 0 {
			t.Fatalf("dpctl status: %s", errs)
		}
		last = out
		var doc struct {
			Nodes []struct {
				ID        string `json:"id"`
				Connected bool   `json:"connected"`
				Resources []struct {
					Type   string `json:"type_url"`
					State  string `json:"state"`
					Latest string `json:"latest_version"`
					Acked  string `json:"acked_version"`
				} `json:"resources"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatal(err)
		}
		synced, envoy := 0, false
		for _, n := range doc.Nodes {
			ok := n.Connected && len(n.Resources) == 5
			for _, r := range n.Resources {
				ok = ok && r.State == "SYNCED" && r.Acked == r.Latest && r.Latest == latest[r.Type]
			}
			if ok {
				synced++
				envoy = envoy || !strings.HasPrefix(n.ID, "follower-")
			}
		}
		return synced == simulated+1 && envoy, fmt.Sprintf("%d of %d nodes SYNCED at the new versions (the Envoy among them: %v)", synced, simulated+1, envoy)
	})
	code, table, _ := s.dpctl("status")
	if code != 0 || strings.Count(table, "SYNCED") != 5*(simulated+1) {
		t.Fatalf("status table:\n%s\nlast JSON:\n%s", table, last)
	}
	// And the Envoy serves what it ACKed.
	s.waitHTTP("/routes/pushed", http.StatusOK, 5*time.Second)
}

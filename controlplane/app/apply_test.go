package app

import (
	"context"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xds"
)

// translations is how many policies the control plane has translated.
func translations(t *testing.T, a *App) uint64 {
	t.Helper()
	var m dto.Metric
	if err := a.metrics.Translate.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestApplyTranslatesOnce: the admin API checks every apply before making
// it, and the apply reuses that check's translation instead of doing the
// work twice; a dry run in a call of its own translates once too.
func TestApplyTranslatesOnce(t *testing.T) {
	a, client, _ := startApp(t, copyExample(t))
	ctx := authed(context.Background())
	got, err := client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	changed := proto.Clone(got.GetPolicy()).(*policyv1.Policy)
	changed.Backends[0].Endpoints = append(changed.Backends[0].Endpoints, "127.0.0.1:8091")

	before := translations(t, a)
	applied, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: changed, ExpectedRevision: got.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	if n := translations(t, a) - before; n != 1 {
		t.Errorf("one apply translated the policy %d times, want 1", n)
	}
	if _, rev := a.Policy(); rev != applied.GetRevision() {
		t.Errorf("serving %s, want the applied %s", rev, applied.GetRevision())
	}

	again := proto.Clone(changed).(*policyv1.Policy)
	again.Backends[0].Endpoints = append(again.Backends[0].Endpoints, "127.0.0.1:8092")
	before = translations(t, a)
	if _, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: again, ExpectedRevision: applied.GetRevision(), DryRun: true}); err != nil {
		t.Fatal(err)
	}
	second, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: again, ExpectedRevision: applied.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	if n := translations(t, a) - before; n != 2 {
		t.Errorf("a dry run and an apply in two calls translated %d times, want 2 (one per call)", n)
	}
	if _, rev := a.Policy(); rev != second.GetRevision() || second.GetRevision() == applied.GetRevision() {
		t.Errorf("serving %s after the second apply (%s)", rev, second.GetRevision())
	}
}

// TestBridgeOnlyForANewPolicy: a new route is one snapshot (it carries
// its policy in its metadata), and so is a key added to an auth policy
// that an HTTP and a tcp route share (both filter configs reach Envoy in
// one update); a route with a new auth policy is pushed in two, the
// widened filter config first (make before break).
func TestBridgeOnlyForANewPolicy(t *testing.T) {
	a, client, _ := startApp(t, copyExample(t))
	ctx := authed(context.Background())
	snapshots := func(change func(*policyv1.Policy)) (int, []string) {
		t.Helper()
		got, err := client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		next := proto.Clone(got.GetPolicy()).(*policyv1.Policy)
		change(next)
		events, stop := a.Status().Subscribe()
		defer stop()
		resp, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: next, ExpectedRevision: got.GetRevision()})
		if err != nil {
			t.Fatal(err)
		}
		var changed []string
		for _, c := range resp.GetChanges() {
			changed = append(changed, c.GetType()+" "+c.GetName())
		}
		n := 0
		for {
			select {
			case e := <-events:
				if e.Kind == xds.EventSnapshot {
					n++
				}
				continue
			default:
			}
			return n, changed
		}
	}
	n, changed := snapshots(func(p *policyv1.Policy) {
		p.Routes = append(p.Routes, &policyv1.Route{Name: "added", Kind: policy.KindHTTP, Backend: p.Backends[0].Name, Match: &policyv1.RouteMatch{Prefix: "/added/"}})
	})
	if n != 1 || !slices.Equal(changed, []string{"RouteConfiguration public"}) {
		t.Errorf("a route added (%v) was pushed in %d snapshots, want its route table alone in 1", changed, n)
	}
	n, changed = snapshots(func(p *policyv1.Policy) {
		p.AuthPolicies = append(p.AuthPolicies, &policyv1.AuthPolicy{
			Name:    "partners",
			Sources: []*policyv1.TokenSource{{Source: &policyv1.TokenSource_Header{Header: "x-partner-key"}}},
			ApiKeys: []*policyv1.APIKey{{Sha256: strings.Repeat("ab", 32), Identity: "partner-a"}},
		})
		p.Routes = append(p.Routes, &policyv1.Route{Name: "partner", Kind: policy.KindHTTP, Backend: p.Backends[0].Name, Auth: "partners", Match: &policyv1.RouteMatch{Prefix: "/partner/"}})
	})
	if n != 2 {
		t.Errorf("a route with a new policy (%v) was pushed in %d snapshots, want 2: the bridge, then the rest", changed, n)
	}
	n, changed = snapshots(func(p *policyv1.Policy) {
		jwt := p.AuthPolicies[0].Jwt
		jwt.Keys = append(jwt.Keys, &policyv1.JWK{Kty: "oct", Kid: "added", Alg: "HS256", K: "YWRkZWQta2V5LWZvci10aGUtYnJpZGdlLXRlc3QtMzI"})
	})
	if n != 1 || len(changed) != 2 {
		t.Errorf("a key added (%v) was pushed in %d snapshots, want both filter configs in 1", changed, n)
	}
}

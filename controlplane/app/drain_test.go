package app

import (
	"context"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
)

// TestApplyThatDrainsNeedsConsent: making the example's tcp route raw (no
// auth, no module) replaces its listener; the admin API reports it on a dry run,
// refuses it without allow_drain (changing nothing) and applies it with.
func TestApplyThatDrainsNeedsConsent(t *testing.T) {
	a, client, _ := startApp(t, copyExample(t))
	ctx := authed(context.Background())
	p, rev := a.Policy()
	p = proto.Clone(p).(*policyv1.Policy)
	for _, r := range p.GetRoutes() {
		if r.GetMode() == "tcp" {
			r.Auth = ""
			r.Tcp.Raw = true
		}
	}

	dry, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: p, ExpectedRevision: rev, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range dry.GetListenerUpdates() {
		names = append(names, u.GetName()+" "+u.GetAction().String())
		if !u.GetDrains() {
			t.Errorf("%s: drains = false", u.GetName())
		}
	}
	if len(names) != 2 || names[0] != "directpipe-deny REMOVED" || names[1] != "tcp-voice-raw MODIFIED" {
		t.Errorf("listener updates: %v", names)
	}
	if addr := dry.GetListenerUpdates()[1].GetAddress(); addr != "127.0.0.1:10001" {
		t.Errorf("address %q", addr)
	}

	_, err = client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: p, ExpectedRevision: rev})
	st := status.Convert(err)
	reason := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	if st.Code() != codes.FailedPrecondition || reason != admin.DrainReason {
		t.Fatalf("apply without allow_drain: %v (reason %q)", err, reason)
	}
	if _, now := a.Policy(); now != rev {
		t.Fatalf("a refused apply changed the revision to %s", now)
	}

	resp, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: p, ExpectedRevision: rev, AllowDrain: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, now := a.Policy(); now != resp.GetRevision() || now == rev {
		t.Errorf("revision %s after apply, response says %s", now, resp.GetRevision())
	}
}

// TestApplyAddingAListenerNeedsNoConsent: a new tcp route adds a listener,
// which holds no connection yet: the apply goes through without
// allow_drain, and the dry run still names the listener it adds.
func TestApplyAddingAListenerNeedsNoConsent(t *testing.T) {
	a, client, _ := startApp(t, copyExample(t))
	ctx := authed(context.Background())
	p, rev := a.Policy()
	p = proto.Clone(p).(*policyv1.Policy)
	p.Routes = append(p.Routes, &policyv1.Route{
		Name: "voice-extra", Kind: "websocket", Mode: "tcp", Backend: p.GetRoutes()[0].GetBackend(),
		Tcp: &policyv1.TCPRoute{Address: "127.0.0.1:10077", Raw: true},
	})
	resp, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: p, ExpectedRevision: rev})
	if err != nil {
		t.Fatalf("apply that only adds a listener: %v", err)
	}
	var added []string
	for _, u := range resp.GetListenerUpdates() {
		if u.GetDrains() {
			t.Errorf("%s %s: drains = true", u.GetName(), u.GetAction())
		}
		added = append(added, u.GetName()+" "+u.GetAction().String())
	}
	if len(added) != 1 || added[0] != "tcp-voice-extra ADDED" {
		t.Errorf("listener updates: %v", added)
	}
	if _, now := a.Policy(); now != resp.GetRevision() || now == rev {
		t.Errorf("revision %s after apply, response says %s", now, resp.GetRevision())
	}
}

package admin

import (
	"testing"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// TestFleetAnswers: the nodes other replicas serve answer an apply as
// their records say: ACKed at the wanted version, NACKed at it (with the
// reason), or not yet; types a node never subscribed to and nodes that
// are gone or local do not count.
func TestFleetAnswers(t *testing.T) {
	const lds, rds = "type.googleapis.com/envoy.config.listener.v3.Listener", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	want := map[string]string{lds: "l2", rds: "r2"}
	res := func(typeURL, name, sent, acked string, state adminv1.SyncState, nack string) *adminv1.ResourceStatus {
		r := &adminv1.ResourceStatus{TypeUrl: typeURL, Type: name, SentVersion: sent, AckedVersion: acked, State: state}
		if nack != "" {
			r.LastNack = &adminv1.Nack{Version: sent, Error: nack}
		}
		return r
	}
	nodes := []*adminv1.Node{
		{Id: "acked", Connected: true, Resources: []*adminv1.ResourceStatus{
			res(lds, "Listener", "l2", "l2", adminv1.SyncState_SYNCED, ""),
			res(rds, "RouteConfiguration", "r2", "r2", adminv1.SyncState_SYNCED, ""),
		}},
		{Id: "nacked", Connected: true, Resources: []*adminv1.ResourceStatus{
			res(lds, "Listener", "l2", "l1", adminv1.SyncState_NACKED, "cannot bind: Address already in use"),
			res(rds, "RouteConfiguration", "r2", "r2", adminv1.SyncState_SYNCED, ""),
		}},
		{Id: "behind", Connected: true, Resources: []*adminv1.ResourceStatus{
			res(lds, "Listener", "l1", "l1", adminv1.SyncState_SYNCED, ""),
			res(rds, "RouteConfiguration", "", "", adminv1.SyncState_NOT_SENT, ""),
		}},
		{Id: "gone", Connected: false},
		{Id: "local", Connected: true, Resources: []*adminv1.ResourceStatus{res(lds, "Listener", "l1", "l1", adminv1.SyncState_STALE, "")}},
	}
	got, done := fleetAnswers(nodes, want, map[string]bool{"local": true})
	if done {
		t.Error("done while a node is behind")
	}
	outcomes := map[string]adminv1.NodeAnswer_Outcome{}
	for _, a := range got {
		outcomes[a.GetNodeId()] = a.GetOutcome()
	}
	wantOutcomes := map[string]adminv1.NodeAnswer_Outcome{"acked": adminv1.NodeAnswer_ACKED, "nacked": adminv1.NodeAnswer_NACKED, "behind": adminv1.NodeAnswer_PENDING}
	if len(outcomes) != len(wantOutcomes) {
		t.Fatalf("answers %v", outcomes)
	}
	for id, o := range wantOutcomes {
		if outcomes[id] != o {
			t.Errorf("%s: %s, want %s", id, outcomes[id], o)
		}
	}
	for _, a := range got {
		switch a.GetNodeId() {
		case "nacked":
			if len(a.GetNacks()) != 1 || a.GetNacks()[0].GetType() != "Listener" || a.GetNacks()[0].GetError() != "cannot bind: Address already in use" {
				t.Errorf("nacks %v", a.GetNacks())
			}
		case "behind":
			if len(a.GetPending()) != 1 || a.GetPending()[0] != "Listener" {
				t.Errorf("pending %v, want the Listener alone (routes were never sent)", a.GetPending())
			}
		}
	}
	if _, done := fleetAnswers(nodes[:2], want, nil); !done {
		t.Error("not done when every node answered")
	}
}

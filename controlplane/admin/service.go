// Package admin is the control plane's admin gRPC service: what every
// connected Envoy runs, ACKs and NACKs, the policy and its changes, events.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/buildinfo"
	"github.com/directpipe/directpipe/controlplane/jwks"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// ErrStaleRevision is returned by Backend.Apply when the policy changed
// since the revision the caller based its change on.
var ErrStaleRevision = errors.New("policy changed since the expected revision")

// ErrUnavailable is returned by Backend.Apply when the policy store cannot
// be reached: the last good policy keeps serving, nothing can change.
var ErrUnavailable = errors.New("policy store unavailable")

// ErrInvalidPolicy wraps validation and translation errors.
var ErrInvalidPolicy = errors.New("invalid policy")

// ErrNotFound is returned when a call names what the policy does not hold.
var ErrNotFound = errors.New("not found")

// ErrInvalidArgument wraps a request's mistakes other than a policy's.
var ErrInvalidArgument = errors.New("invalid argument")

// Backend is what the service reads and changes: the running control plane.
type Backend interface {
	// Policy returns the policy being served and its revision.
	Policy() (*policyv1.Policy, string)
	// Check validates and translates a policy without applying it.
	Check(p *policyv1.Policy) error
	// Apply replaces the policy if expectedRevision is current; with dryRun
	// it only reports what would change. Serialised by the backend. source,
	// when not nil, is the policy's text as the user wrote it, which a
	// store that keeps text stores instead of one emitted from p.
	Apply(ctx context.Context, p *policyv1.Policy, source []byte, expectedRevision string, dryRun bool) (string, []translate.Change, error)
	// PolicySource returns the stored text of the policy of revision rev,
	// when the store keeps it.
	PolicySource(ctx context.Context, rev string) ([]byte, bool)
	// PolicyRejected returns the latest policy refused from the file or
	// store while the last good one kept serving; nil once one is served
	// from there again.
	PolicyRejected() *adminv1.PolicyRejection
	// Resources returns what every Envoy is being served.
	Resources() xdstype.Resources
	// ListenerConnections returns the connections the listener bound to
	// address holds now, by node, for the nodes that report them.
	ListenerConnections(address string) map[string]int64
	// NodeWasm returns what the nodes' stats say of their Wasm VMs, by
	// node, for the nodes that report them.
	NodeWasm() map[string]*adminv1.WasmHealth
	Status() *xds.Status
	// KeySources reports the key sets the served policy names.
	KeySources() []jwks.Status
	// Replica names this control plane among replicas ("" alone).
	Replica() string
	// FleetNodes are the nodes other replicas serve (none alone).
	FleetNodes(ctx context.Context) ([]*adminv1.Node, error)
	// History returns the stored revisions of the policy, newest first.
	History(ctx context.Context) ([]*adminv1.PolicyRevision, error)
	// Streams returns the live streams the fleet's load reports count,
	// and the nodes that report them.
	Streams(ctx context.Context) ([]*adminv1.EndpointStreams, []string, error)
	// QuotaStreams returns the live streams of the identities under a
	// quota holding the most, and a row adding up the rest.
	QuotaStreams() []*adminv1.IdentityStreams
	// Drains returns every drain with its fleet-wide live count.
	Drains() []*adminv1.Drain
	// DrainEndpoint starts, or with cancel ends, an endpoint's drain.
	DrainEndpoint(ctx context.Context, backend, endpoint string, deadline time.Duration, cancel bool) (*adminv1.Drain, error)
	// Rebalance plans, and unless dryRun asks back ends to carry out, the
	// streams each endpoint of a back end should end to even it out.
	Rebalance(ctx context.Context, backend string, window time.Duration, dryRun bool) (*adminv1.RebalanceResponse, error)
}

// Service implements adminv1.AdminServiceServer.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	backend Backend
}

// NewService returns the admin service over a backend.
func NewService(b Backend) *Service { return &Service{backend: b} }

// Register adds the admin service, the gRPC health service and server
// reflection (so grpcurl works) to g. hs is the control plane's health,
// which says SERVING once a policy is served; nil: always serving.
func (s *Service) Register(g *grpc.Server, hs *health.Server) {
	adminv1.RegisterAdminServiceServer(g, s)
	if hs == nil {
		hs = health.NewServer()
		hs.SetServingStatus(adminv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
}

func (s *Service) ListNodes(ctx context.Context, _ *adminv1.ListNodesRequest) (*adminv1.ListNodesResponse, error) {
	resp := &adminv1.ListNodesResponse{
		Nodes:          NodeProtos(s.backend.Status(), s.backend.Replica(), s.backend.NodeWasm()),
		PolicyRejected: s.backend.PolicyRejected(),
	}
	fleet, err := s.backend.FleetNodes(ctx)
	if err != nil {
		return nil, applyError(err)
	}
	resp.Nodes = mergeNodes(resp.Nodes, fleet)
	return resp, nil
}

// NodeProtos is the status of the nodes this control plane has seen, as
// the API shows them, each marked with replica and with its VMs' health
// from wasm.
func NodeProtos(st *xds.Status, replica string, wasm map[string]*adminv1.WasmHealth) []*adminv1.Node {
	latest := st.Latest()
	typeURLs := make([]string, 0, len(latest))
	for t := range latest {
		typeURLs = append(typeURLs, t)
	}
	sort.Strings(typeURLs)
	var out []*adminv1.Node
	for _, n := range st.Nodes() {
		node := &adminv1.Node{
			Id: n.ID, Cluster: n.Cluster, EnvoyVersion: n.EnvoyVersion, XdsFlavour: n.Flavour,
			Connected: n.Connected, ConnectedSince: timestamppb.New(n.ConnectedSince), LastSeen: timestamppb.New(n.LastSeen),
			Replica: replica, Wasm: wasm[n.ID], Filter: n.Filter,
		}
		for _, t := range typeURLs {
			ts := n.Types[t]
			rs := &adminv1.ResourceStatus{
				Type: xdstype.Name(t), TypeUrl: t, State: syncState(n.State(t, latest[t])),
				LatestVersion: latest[t], SentVersion: ts.Sent, AckedVersion: ts.Acked,
			}
			if ts.LastNack != nil {
				rs.LastNack = &adminv1.Nack{Version: ts.LastNack.Version, Error: ts.LastNack.Error, At: timestamppb.New(ts.LastNack.At)}
			}
			node.Resources = append(node.Resources, rs)
		}
		out = append(out, node)
	}
	return out
}

// mergeNodes adds the nodes other replicas serve to this replica's own.
// A node has one entry: the connected one that connected last (a replica
// that died keeps its records until its lease expires, while its nodes
// have already reconnected elsewhere).
func mergeNodes(local, fleet []*adminv1.Node) []*adminv1.Node {
	best := map[string]*adminv1.Node{}
	var order []string
	for _, n := range append(slices.Clone(local), fleet...) {
		cur, ok := best[n.GetId()]
		if !ok {
			order = append(order, n.GetId())
			best[n.GetId()] = n
			continue
		}
		if n.GetConnected() && (!cur.GetConnected() || n.GetConnectedSince().AsTime().After(cur.GetConnectedSince().AsTime())) {
			best[n.GetId()] = n
		}
	}
	out := make([]*adminv1.Node, 0, len(order))
	for _, id := range order {
		out = append(out, best[id])
	}
	return out
}

func syncState(s xds.SyncState) adminv1.SyncState {
	switch s {
	case xds.Synced:
		return adminv1.SyncState_SYNCED
	case xds.Stale:
		return adminv1.SyncState_STALE
	case xds.Nacked:
		return adminv1.SyncState_NACKED
	case xds.NotSent:
		return adminv1.SyncState_NOT_SENT
	}
	return adminv1.SyncState_SYNC_STATE_UNSPECIFIED
}

func (s *Service) GetPolicyHistory(ctx context.Context, _ *adminv1.GetPolicyHistoryRequest) (*adminv1.GetPolicyHistoryResponse, error) {
	h, err := s.backend.History(ctx)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &adminv1.GetPolicyHistoryResponse{Revisions: h}, nil
}

func (s *Service) GetPolicy(ctx context.Context, req *adminv1.GetPolicyRequest) (*adminv1.GetPolicyResponse, error) {
	p, rev := s.backend.Policy()
	resp := &adminv1.GetPolicyResponse{Policy: p, Revision: rev}
	if req.GetIncludeYaml() {
		if src, ok := s.backend.PolicySource(ctx, rev); ok {
			resp.PolicyYaml = string(src)
		}
	}
	return resp, nil
}

func (s *Service) GetVersion(context.Context, *adminv1.GetVersionRequest) (*adminv1.GetVersionResponse, error) {
	b := buildinfo.Read()
	return &adminv1.GetVersionResponse{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion, Replica: s.backend.Replica()}, nil
}

func (s *Service) ValidatePolicy(_ context.Context, req *adminv1.ValidatePolicyRequest) (*adminv1.ValidatePolicyResponse, error) {
	resp := &adminv1.ValidatePolicyResponse{}
	if err := s.backend.Check(req.GetPolicy()); err != nil {
		resp.Errors = splitErrors(err)
	} else {
		resp.Warnings = policy.Warnings(req.GetPolicy())
	}
	return resp, nil
}

func (s *Service) ListKeySources(context.Context, *adminv1.ListKeySourcesRequest) (*adminv1.ListKeySourcesResponse, error) {
	resp := &adminv1.ListKeySourcesResponse{}
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	for _, st := range s.backend.KeySources() {
		resp.Sources = append(resp.Sources, &adminv1.KeySource{
			AuthPolicy: st.Policy, Kind: st.Kind, Location: st.Location, Keys: int32(st.Keys), Skipped: st.Skipped,
			LastSuccess: ts(st.LastSuccess), LastError: st.LastError, LastErrorAt: ts(st.LastErrorAt),
		})
	}
	return resp, nil
}

// splitErrors unwraps errors.Join so that each problem is its own line.
func splitErrors(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range j.Unwrap() {
				walk(inner)
			}
			return
		}
		if e != ErrInvalidPolicy { // the sentinel only classifies the rest
			out = append(out, e.Error())
		}
	}
	walk(err)
	return out
}

// MaxRequestBytes bounds a request to the admin API, checked by gRPC
// before the message is decoded; the largest is an apply.
const MaxRequestBytes = policy.MaxMessageBytes

func (s *Service) ApplyPolicy(ctx context.Context, req *adminv1.ApplyPolicyRequest) (*adminv1.ApplyPolicyResponse, error) {
	if req.GetPolicy() == nil {
		return nil, status.Error(codes.InvalidArgument, "policy is required")
	}
	// The same bound as a policy file's: a policy that could not be
	// loaded from a file is not applied either.
	if n := proto.Size(req.GetPolicy()); n > policy.MaxPolicyBytes {
		return nil, status.Errorf(codes.InvalidArgument, "policy: %v", policy.SizeError("the encoded policy", int64(n)))
	}
	// Before the text is parsed: a policy over its bounds needs no more
	// memory spent on it.
	if err := policy.CheckSize(req.GetPolicy()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "policy: %v", err)
	}
	if req.GetExpectedRevision() == "" {
		return nil, status.Error(codes.InvalidArgument, "expected_revision is required: get the policy first")
	}
	source, err := checkSource(req)
	if err != nil {
		return nil, err
	}
	// Every apply is computed first: a change that goes through LDS may
	// drain live calls, so it needs the caller's consent. The real apply
	// names the same expected revision, so nothing can slip in between.
	current := s.backend.Resources()
	rev, changes, err := s.backend.Apply(ctx, req.GetPolicy(), source, req.GetExpectedRevision(), true)
	if err != nil {
		return nil, applyError(err)
	}
	updates := s.listenerUpdates(translate.ListenerUpdates(changes, current))
	wait := req.GetWait().AsDuration()
	if req.GetWait() != nil && (wait < 0 || wait > MaxApplyWait) {
		return nil, status.Errorf(codes.InvalidArgument, "wait %s: want 0 to %s", wait, MaxApplyWait)
	}
	if !req.GetDryRun() {
		if drains(updates) && !req.GetAllowDrain() {
			return nil, drainRefusal(updates)
		}
		if rev, changes, err = s.backend.Apply(ctx, req.GetPolicy(), source, req.GetExpectedRevision(), false); err != nil {
			return nil, applyError(err)
		}
	}
	resp := &adminv1.ApplyPolicyResponse{Revision: rev, DryRun: req.GetDryRun(), ListenerUpdates: updates}
	for _, c := range changes {
		resp.Changes = append(resp.Changes, &adminv1.ResourceChange{Type: c.Type, Name: c.Name, Action: action(c.Action)})
	}
	if !req.GetDryRun() && wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		st := s.backend.Status()
		want := st.Latest()
		local := map[string]bool{}
		for _, n := range st.Nodes() {
			local[n.ID] = n.Connected
		}
		// This replica's nodes and the other replicas' are awaited
		// together: one slow node must not leave no time for the rest.
		fleet := make(chan []*adminv1.NodeAnswer, 1)
		go func() { fleet <- s.awaitFleet(wctx, want, local) }()
		resp.Nodes = nodeAnswers(st.Await(wctx, want))
		resp.Nodes = append(resp.Nodes, <-fleet...)
	}
	return resp, nil
}

// checkSource returns the apply's policy_yaml, if any, once it is known to
// decode to the very policy applied: the text stored must be the policy
// served.
func checkSource(req *adminv1.ApplyPolicyRequest) ([]byte, error) {
	if req.GetPolicyYaml() == "" {
		return nil, nil
	}
	if n := len(req.GetPolicyYaml()); n > policy.MaxPolicyBytes {
		return nil, status.Errorf(codes.InvalidArgument, "policy_yaml: %v", policy.SizeError("the policy", int64(n)))
	}
	src := []byte(req.GetPolicyYaml())
	p, err := policy.Decode(src)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "policy_yaml: %v", err)
	}
	if !proto.Equal(p, req.GetPolicy()) {
		return nil, status.Error(codes.InvalidArgument, "policy_yaml does not decode to policy: send the text the policy was decoded from")
	}
	return src, nil
}

// fleetPoll is how often the nodes of other replicas are read while an
// apply waits for them (they publish every second).
const fleetPoll = 250 * time.Millisecond

// awaitFleet waits, until ctx ends, for the connected nodes other
// replicas serve (none alone) to answer the wanted versions, and returns
// their answers; the nodes in skip are this replica's own.
func (s *Service) awaitFleet(ctx context.Context, want map[string]string, skip map[string]bool) []*adminv1.NodeAnswer {
	var last []*adminv1.NodeAnswer
	for {
		nodes, err := s.backend.FleetNodes(ctx)
		if err == nil {
			// A replica that died leaves its records until its lease
			// ends, while its nodes reconnect elsewhere: one entry each.
			var done bool
			last, done = fleetAnswers(mergeNodes(nil, nodes), want, skip)
			if done {
				return last
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(fleetPoll):
		}
	}
}

// fleetAnswers is how the connected nodes of other replicas, as they
// record them, answered the wanted versions (by type URL), and whether
// all of them have; nodes in skip are left out.
func fleetAnswers(nodes []*adminv1.Node, want map[string]string, skip map[string]bool) ([]*adminv1.NodeAnswer, bool) {
	var out []*adminv1.NodeAnswer
	done := true
	for _, n := range nodes {
		if !n.GetConnected() || skip[n.GetId()] {
			continue
		}
		a := &adminv1.NodeAnswer{NodeId: n.GetId(), Outcome: adminv1.NodeAnswer_ACKED}
		for _, r := range n.GetResources() {
			v, ok := want[r.GetTypeUrl()]
			switch {
			case !ok || r.GetSentVersion() == "" && r.GetAckedVersion() == "":
				// Not subscribed.
			case r.GetState() == adminv1.SyncState_NACKED && r.GetLastNack().GetVersion() == v:
				nack := r.GetLastNack()
				a.Nacks = append(a.Nacks, &adminv1.Nack{Type: r.GetType(), Version: nack.GetVersion(), Error: nack.GetError(), At: nack.GetAt()})
			case r.GetAckedVersion() == v && r.GetState() != adminv1.SyncState_NACKED:
			default:
				a.Pending = append(a.Pending, r.GetType())
			}
		}
		switch {
		case len(a.Nacks) > 0:
			a.Outcome = adminv1.NodeAnswer_NACKED
		case len(a.Pending) > 0:
			a.Outcome = adminv1.NodeAnswer_PENDING
		}
		done = done && len(a.Pending) == 0
		out = append(out, a)
	}
	return out, done
}

// MaxApplyWait bounds how long an apply may wait for Envoys' answers.
const MaxApplyWait = 5 * time.Minute

func nodeAnswers(answers []xds.Answer) []*adminv1.NodeAnswer {
	out := make([]*adminv1.NodeAnswer, 0, len(answers))
	for _, a := range answers {
		na := &adminv1.NodeAnswer{NodeId: a.Node, Outcome: adminv1.NodeAnswer_ACKED}
		for _, t := range a.Pending {
			na.Pending = append(na.Pending, xdstype.Name(t))
		}
		typeURLs := slices.Sorted(maps.Keys(a.Nacks))
		for _, t := range typeURLs {
			n := a.Nacks[t]
			na.Nacks = append(na.Nacks, &adminv1.Nack{Type: xdstype.Name(t), Version: n.Version, Error: n.Error, At: timestamppb.New(n.At)})
		}
		switch {
		case a.Gone:
			na.Outcome = adminv1.NodeAnswer_DISCONNECTED
		case len(na.Nacks) > 0:
			na.Outcome = adminv1.NodeAnswer_NACKED
		case len(na.Pending) > 0:
			na.Outcome = adminv1.NodeAnswer_PENDING
		}
		out = append(out, na)
	}
	return out
}

func applyError(err error) error {
	switch {
	case errors.Is(err, ErrStaleRevision):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrInvalidPolicy), errors.Is(err, ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// listenerUpdates adds to each listener update the connections its nodes
// report.
func (s *Service) listenerUpdates(updates []translate.ListenerUpdate) []*adminv1.ListenerUpdate {
	var out []*adminv1.ListenerUpdate
	for _, u := range updates {
		lu := &adminv1.ListenerUpdate{Name: u.Name, Action: action(u.Action), Address: u.Address, Drains: u.Drains()}
		if u.Drains() && u.Address != "" {
			lu.Connections = s.backend.ListenerConnections(u.Address)
		}
		out = append(out, lu)
	}
	return out
}

// drains reports whether any update drains a listener: a listener that is
// only added holds no connection yet, so it needs no consent.
func drains(updates []*adminv1.ListenerUpdate) bool {
	return slices.ContainsFunc(updates, (*adminv1.ListenerUpdate).GetDrains)
}

// DrainReason is the ErrorInfo reason of an apply refused because it
// updates listeners.
const DrainReason = "WOULD_DRAIN_LISTENERS"

func drainRefusal(updates []*adminv1.ListenerUpdate) error {
	var parts []string
	for _, u := range updates {
		what := "added, drains nothing"
		if u.GetDrains() {
			var n int64
			for _, c := range u.GetConnections() {
				n += c
			}
			what = fmt.Sprintf("%s, drains %d connection(s) now", strings.ToLower(u.GetAction().String()), n)
			if len(u.GetConnections()) == 0 {
				what = strings.ToLower(u.GetAction().String()) + ", drains its connections"
			}
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", u.GetName(), what))
	}
	st := status.New(codes.FailedPrecondition, "the change updates listeners, and Envoy drains a listener it replaces or removes: "+strings.Join(parts, ", "))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: DrainReason, Domain: "directpipe.admin.v1"}); err == nil {
		st = d
	}
	return st.Err()
}

func action(a translate.Action) adminv1.ResourceChange_Action {
	switch a {
	case translate.Added:
		return adminv1.ResourceChange_ADDED
	case translate.Modified:
		return adminv1.ResourceChange_MODIFIED
	case translate.Removed:
		return adminv1.ResourceChange_REMOVED
	}
	return adminv1.ResourceChange_ACTION_UNSPECIFIED
}

func (s *Service) GetConfig(_ context.Context, req *adminv1.GetConfigRequest) (*adminv1.GetConfigResponse, error) {
	known := false
	for _, n := range s.backend.Status().Nodes() {
		known = known || n.ID == req.GetNodeId()
	}
	if !known {
		return nil, status.Errorf(codes.NotFound, "no node %q has connected", req.GetNodeId())
	}
	// Every node is served the same snapshot; per-node state is only what
	// it has ACKed, which ListNodes reports.
	res := s.backend.Resources()
	resp := &adminv1.GetConfigResponse{
		NodeId: req.GetNodeId(), ResourcesJson: map[string]string{}, Versions: map[string]string{},
	}
	for t, v := range s.backend.Status().Latest() {
		resp.Versions[xdstype.Name(t)] = v
	}
	for _, k := range xdstype.Kinds() {
		js, err := resourcesJSON(res[k.URL])
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.ResourcesJson[k.Name()] = js
	}
	return resp, nil
}

func resourcesJSON(list []types.Resource) (string, error) {
	out := make([]json.RawMessage, 0, len(list))
	for _, r := range list {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			return "", fmt.Errorf("render resource: %w", err)
		}
		out = append(out, b)
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func (s *Service) WatchEvents(_ *adminv1.WatchEventsRequest, stream grpc.ServerStreamingServer[adminv1.Event]) error {
	events, cancel := s.backend.Status().Subscribe()
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case e, ok := <-events:
			if !ok {
				return nil
			}
			err := stream.Send(&adminv1.Event{
				At: timestamppb.New(e.At), Kind: string(e.Kind), NodeId: e.Node, Type: typeName(e.TypeURL),
				Version: e.Version, Error: e.Error, Revision: e.Revision,
			})
			if err != nil {
				return err
			}
		}
	}
}

func typeName(typeURL string) string {
	if typeURL == "" {
		return ""
	}
	return xdstype.Name(typeURL)
}

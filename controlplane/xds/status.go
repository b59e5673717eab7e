package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"

	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// SyncState says where a node stands for one resource type.
type SyncState string

const (
	Synced  SyncState = "SYNCED"   // ACKed the latest version
	Stale   SyncState = "STALE"    // sent, not yet ACKed
	Nacked  SyncState = "NACKED"   // rejected the latest version it was sent
	NotSent SyncState = "NOT_SENT" // never asked for or never sent
)

// Flavours of xDS a node may speak.
const (
	FlavourSotW  = "sotw"
	FlavourDelta = "delta"
)

// Nack is Envoy's rejection of a version.
type Nack struct {
	Version string
	Error   string
	At      time.Time
}

// TypeStatus is what one node has been sent and has answered for one type.
type TypeStatus struct {
	Sent    string
	SentAt  time.Time
	Acked   string
	AckedAt time.Time
	// LastNack is the most recent rejection, kept after later ACKs so that
	// an operator can still see what went wrong.
	LastNack *Nack
}

// NodeStatus is one Envoy as the control plane sees it.
type NodeStatus struct {
	ID             string
	Cluster        string
	EnvoyVersion   string
	Flavour        string
	Connected      bool
	ConnectedSince time.Time
	LastSeen       time.Time
	Types          map[string]TypeStatus
	// Admin is the Envoy admin address the node's bootstrap reports
	// (node metadata AdminMetadataKey): ip:port, unix:PATH, or empty.
	Admin string
	// Filter is the build of the handshake filter the node is served:
	// FilterWasm or FilterNative (node metadata FilterMetadataKey).
	Filter string
}

// AdminMetadataKey is the node metadata field in which envoy-bootstrap
// reports Envoy's admin address, so that no policy routes clients to it.
const AdminMetadataKey = "directpipe.envoy_admin"

// maxAdminAddr bounds the admin address a node may report.
const maxAdminAddr = 256

func adminAddress(n *corev3.Node) string {
	a := n.GetMetadata().GetFields()[AdminMetadataKey].GetStringValue()
	if len(a) > maxAdminAddr {
		return ""
	}
	return a
}

// State says whether the node runs the latest version of a type.
func (n NodeStatus) State(typeURL, latest string) SyncState {
	ts, ok := n.Types[typeURL]
	switch {
	case !ok || ts.Sent == "":
		return NotSent
	// A rejected version stays rejected until Envoy ACKs it offered
	// again after the NACK: Envoy 1.40 ACKs an extension config it failed
	// to apply when the same bytes come again, without applying them, so
	// an ACK of the refused version proves nothing by itself. The xDS
	// server re-offers a refused version only changed (see nackBackoff).
	case ts.LastNack != nil && ts.LastNack.Version == ts.Sent &&
		!(ts.Acked == ts.Sent && ts.SentAt.After(ts.LastNack.At) && !ts.AckedAt.Before(ts.SentAt)):
		return Nacked
	case ts.Acked == latest:
		return Synced
	}
	return Stale
}

// EventKind names what happened.
type EventKind string

const (
	EventConnected    EventKind = "node_connected"
	EventDisconnected EventKind = "node_gone"
	EventPushed       EventKind = "pushed"
	EventACK          EventKind = "ack"
	EventNACK         EventKind = "nack"
	EventSnapshot     EventKind = "snapshot_set"
	EventPolicy       EventKind = "policy_applied"
	// EventPolicyRejected is a policy from the file or store refused
	// while the last good one keeps serving.
	EventPolicyRejected EventKind = "policy_rejected"
)

// Event is one xDS happening, for the admin API's event stream.
type Event struct {
	At      time.Time
	Kind    EventKind
	Node    string
	TypeURL string
	Version string
	Error   string
	// Revision is the policy revision, for policy events.
	Revision string
}

// Status records per node and type what was sent, ACKed and NACKed, fed by
// go-control-plane's stream callbacks.
type Status struct {
	log     *slog.Logger
	metrics *Metrics

	mu      sync.Mutex
	nodes   map[string]*NodeStatus
	streams map[int64]*stream
	latest  map[string]string
	subs    map[chan Event]struct{}
	// explain adds what the control plane knows to a NACK's message.
	explain func(node, typeURL, msg string) string
	// holding is the version of a type whose resources a delta stream's
	// first request says the node holds already, "" unless exactly the
	// latest (see Server.holding).
	holding func(node *corev3.Node, typeURL string, subscribed []string, held map[string]string) string
}

// stream is one ADS stream: its node and the version behind each nonce, as
// Envoy answers a nonce rather than a version in delta xDS and in NACKs.
type stream struct {
	node    string
	flavour string
	nonces  map[string]string
	// meta is the node as its first request described it: Envoy may name
	// it in the first request of a stream only.
	meta *corev3.Node
}

// maxNonces bounds the nonce memory of a stream that never answers.
const maxNonces = 64

// ExplainNACKs sets a function whose words are added to every NACK's
// message: what Envoy says is often too short to act on (1.40 reports a
// Wasm module it has not downloaded, or whose sha256 does not match, as
// "Unable to create Wasm plugin"). It must not call back into Status.
func (s *Status) ExplainNACKs(fn func(node, typeURL, msg string) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.explain = fn
}

func newStatus(log *slog.Logger, m *Metrics) *Status {
	return &Status{
		log: log, metrics: m,
		nodes: map[string]*NodeStatus{}, streams: map[int64]*stream{},
		latest: map[string]string{}, subs: map[chan Event]struct{}{},
	}
}

func (s *Status) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.open(id, FlavourSotW)
			return nil
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.open(id, FlavourDelta)
			return nil
		},
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { s.closed(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.closed(id) },
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			// State of the world says what Envoy runs in version_info: after
			// a NACK, later requests carry the old version, not the rejected
			// one their nonce points at.
			v := BaseVersion(req.GetVersionInfo())
			s.request(id, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), &v, req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			// Delta requests carry no version: the nonce names the response.
			s.request(id, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), nil, req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			// An Envoy that reconnects (to this replica or another) names
			// the resources it holds; the server sends none it holds at
			// their current versions, so nothing would ever be ACKed.
			if req.GetResponseNonce() == "" && len(req.GetInitialResourceVersions()) > 0 {
				s.holds(id, req)
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.response(id, resp.GetTypeUrl(), resp.GetNonce(), BaseVersion(resp.GetVersionInfo()))
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.response(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
		},
	}
}

func (s *Status) open(id int64, flavour string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[id] = &stream{flavour: flavour, nonces: map[string]string{}}
}

func (s *Status) closed(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	delete(s.streams, id)
	if st == nil || st.node == "" {
		return
	}
	for _, other := range s.streams {
		if other.node == st.node {
			return // the node still has another stream
		}
	}
	if n := s.nodes[st.node]; n != nil {
		n.Connected = false
		n.LastSeen = time.Now()
	}
	s.forgetOldest()
	s.metrics.connected(-1)
	s.log.Info("envoy disconnected", "node", st.node)
	s.emit(Event{Kind: EventDisconnected, Node: st.node})
}

// maxGoneNodes bounds how many disconnected nodes are remembered: a fleet
// that churns (autoscaling, restarts with new ids) must not grow the map
// forever.
const maxGoneNodes = 256

// forgetOldest drops the longest-gone nodes beyond maxGoneNodes; s.mu is
// held.
func (s *Status) forgetOldest() {
	var gone []*NodeStatus
	for _, n := range s.nodes {
		if !n.Connected {
			gone = append(gone, n)
		}
	}
	if len(gone) <= maxGoneNodes {
		return
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].LastSeen.Before(gone[j].LastSeen) })
	for _, n := range gone[:len(gone)-maxGoneNodes] {
		delete(s.nodes, n.ID)
	}
}

// request handles a discovery request: the first one names the node, later
// ones ACK or NACK the response whose nonce they carry.
func (s *Status) request(id int64, node *corev3.Node, typeURL, nonce string, versionInfo *string, errMsg string, nack bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return
	}
	now := time.Now()
	if st.node == "" && node.GetId() != "" {
		st.node, st.meta = node.GetId(), node
		n := s.nodes[st.node]
		if n == nil || !n.Connected {
			n = &NodeStatus{
				ID: node.GetId(), Cluster: node.GetCluster(), EnvoyVersion: envoyVersion(node),
				Flavour: st.flavour, Connected: true, ConnectedSince: now, Types: map[string]TypeStatus{},
				Admin: adminAddress(node), Filter: nodeFilter(node),
			}
			s.nodes[st.node] = n
			s.metrics.connected(1)
			s.log.Info("envoy connected", "node", n.ID, "cluster", n.Cluster, "version", n.EnvoyVersion, "xds", n.Flavour)
			s.emit(Event{Kind: EventConnected, Node: n.ID})
		}
	}
	n := s.nodes[st.node]
	if n == nil {
		return
	}
	n.LastSeen = now
	if nonce == "" {
		return // a subscription, not an answer
	}
	version, known := st.nonces[nonce]
	delete(st.nonces, nonce)
	if !known {
		return // an answer to a response this process did not send
	}
	ts := n.Types[typeURL]
	if nack {
		if s.explain != nil {
			if why := s.explain(n.ID, typeURL, errMsg); why != "" {
				errMsg += " (" + why + ")"
			}
		}
		ts.LastNack = &Nack{Version: version, Error: errMsg, At: now}
		s.metrics.nack(typeURL)
		s.log.Warn("envoy rejected config", "node", n.ID, "type", xdstype.Name(typeURL), "version", version, "error", errMsg)
		s.emit(Event{Kind: EventNACK, Node: n.ID, TypeURL: typeURL, Version: version, Error: errMsg})
	} else {
		if versionInfo != nil {
			version = *versionInfo
		}
		ts.Acked, ts.AckedAt = version, now
		s.metrics.ack(typeURL)
		s.log.Debug("envoy accepted config", "node", n.ID, "type", xdstype.Name(typeURL), "version", version)
		s.emit(Event{Kind: EventACK, Node: n.ID, TypeURL: typeURL, Version: version})
	}
	n.Types[typeURL] = ts
}

// holds records that the node of stream id holds the latest version of
// the type of req, a delta stream's first request of it, if its initial
// resource versions say so: as sent and ACKed, since Envoy runs it.
func (s *Status) holds(id int64, req *discoveryv3.DeltaDiscoveryRequest) {
	s.mu.Lock()
	holding := s.holding
	st := s.streams[id]
	var meta *corev3.Node
	if st != nil {
		meta = st.meta
	}
	s.mu.Unlock()
	if holding == nil || meta == nil {
		return
	}
	typeURL := req.GetTypeUrl()
	version := holding(meta, typeURL, req.GetResourceNamesSubscribe(), req.GetInitialResourceVersions())
	if version == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st = s.streams[id]
	if st == nil || s.nodes[st.node] == nil || s.latest[typeURL] != version {
		return // gone, or a newer snapshot meanwhile: it will be sent
	}
	n := s.nodes[st.node]
	ts := n.Types[typeURL]
	now := time.Now()
	ts.Sent, ts.SentAt, ts.Acked, ts.AckedAt = version, now, version, now
	n.Types[typeURL] = ts
	s.log.Debug("envoy holds config already", "node", n.ID, "type", xdstype.Name(typeURL), "version", version)
}

// HoldingFrom sets the function that says which version of a type a
// reconnecting delta node holds. It must not call back into Status.
func (s *Status) HoldingFrom(fn func(node *corev3.Node, typeURL string, subscribed []string, held map[string]string) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holding = fn
}

func (s *Status) response(id int64, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return
	}
	if len(st.nonces) >= maxNonces {
		clear(st.nonces)
	}
	st.nonces[nonce] = version
	s.metrics.push(typeURL)
	n := s.nodes[st.node]
	if n == nil {
		return
	}
	ts := n.Types[typeURL]
	ts.Sent, ts.SentAt = version, time.Now()
	n.Types[typeURL] = ts
	s.emit(Event{Kind: EventPushed, Node: n.ID, TypeURL: typeURL, Version: version})
}

func (s *Status) setLatest(versions map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = versions
	s.emit(Event{Kind: EventSnapshot, Version: fmt.Sprint(shortVersions(versions))})
}

// Latest returns the version of each type in the current snapshot.
func (s *Status) Latest() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.latest)
}

// Nodes returns every node seen since start, connected ones first, by ID.
func (s *Status) Nodes() []NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeStatus, 0, len(s.nodes))
	for _, n := range s.nodes {
		c := *n
		c.Types = maps.Clone(n.Types)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Connected != out[j].Connected {
			return out[i].Connected
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Subscribe returns a channel of events and a function that ends the
// subscription. A subscriber that falls behind loses events rather than
// stalling xDS.
func (s *Status) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 256)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// Publish sends an event that did not come from xDS, such as a policy
// apply, to every subscriber.
func (s *Status) Publish(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.emit(e)
}

// emit is called with s.mu held.
func (s *Status) emit(e Event) {
	e.At = time.Now()
	for ch := range s.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func envoyVersion(n *corev3.Node) string {
	if v := n.GetUserAgentBuildVersion().GetVersion(); v != nil {
		return fmt.Sprintf("%d.%d.%d", v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch())
	}
	return n.GetUserAgentVersion()
}

// Answer is how one node answered the versions an apply set.
type Answer struct {
	Node string
	// Nacks are the types the node rejected at the wanted version.
	Nacks map[string]Nack
	// Pending are the types the node has not answered at the wanted
	// version yet.
	Pending []string
	// Gone says the node disconnected before it answered.
	Gone bool
}

// awaitPoll is how often Await looks again without an event: a subscriber
// that falls behind loses events.
const awaitPoll = 250 * time.Millisecond

// Await waits until every connected node has ACKed or NACKed the wanted
// version of each type it subscribes to (a type it was never sent is not
// its), or until ctx ends, and returns each node's answer by node id. A
// node that was connected at the start and is gone at the end is marked
// Gone; nodes that connect meanwhile are waited for too.
func (s *Status) Await(ctx context.Context, want map[string]string) []Answer {
	events, cancel := s.Subscribe()
	defer cancel()
	tick := time.NewTicker(awaitPoll)
	defer tick.Stop()
	seen := map[string]bool{}
	for {
		answers, done := s.answers(want, seen)
		if done {
			return answers
		}
		select {
		case <-ctx.Done():
			return answers
		case <-events:
		case <-tick.C:
		}
	}
}

// answers is every node's answer to want now, and whether every connected
// node has answered; seen gathers the nodes connected so far.
func (s *Status) answers(want map[string]string, seen map[string]bool) ([]Answer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := true
	var out []Answer
	for id, n := range s.nodes {
		if !n.Connected {
			if seen[id] {
				out = append(out, Answer{Node: id, Gone: true})
			}
			continue
		}
		seen[id] = true
		a := Answer{Node: id}
		for typeURL, version := range want {
			ts, ok := n.Types[typeURL]
			switch {
			case !ok || ts.Sent == "":
				// Not subscribed: nothing to answer.
			case ts.LastNack != nil && ts.LastNack.Version == version &&
				// As in State: an ACK of a refused version counts only
				// if the version was offered again after the NACK.
				!(ts.Acked == version && ts.SentAt.After(ts.LastNack.At) && !ts.AckedAt.Before(ts.SentAt)):
				if a.Nacks == nil {
					a.Nacks = map[string]Nack{}
				}
				a.Nacks[typeURL] = *ts.LastNack
			case ts.Acked == version:
			default:
				a.Pending = append(a.Pending, typeURL)
			}
		}
		sort.Strings(a.Pending)
		done = done && len(a.Pending) == 0
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, done
}

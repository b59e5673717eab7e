// Package nodestats receives the stats Envoys stream to the control plane
// (Envoy's metrics service sink, which the directpipe bootstrap turns on)
// and keeps the few the control plane acts on: how many connections each
// listener of each node holds now, so that a change that would drain a
// listener can say how many calls it would cut; and whether a node's Wasm
// VMs failed, which Envoy shows only in its own log and counters.
package nodestats

import (
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	"google.golang.org/grpc"

	"github.com/directpipe/directpipe/filter/contract"
)

const (
	// maxNodes and maxListeners bound what a client can make the store
	// hold; past them, new entries are dropped.
	maxNodes     = 10_000
	maxListeners = 1_000
	// maxWasmStats bounds the reload counters kept per node (three per
	// plugin).
	maxWasmStats = 300
	// maxQuotaGauges bounds the identity gauges kept per node: an Envoy
	// defines at most contract.MaxIdentityGauges.
	maxQuotaGauges = 2 * contract.MaxIdentityGauges
	// stale is how long a node's numbers stay credible without an update
	// (Envoy flushes stats every 5 seconds by default).
	stale = time.Minute
)

// Store implements Envoy's MetricsService and keeps, per node, the active
// connection count of each listener.
type Store struct {
	metricsv3.UnimplementedMetricsServiceServer

	mu    sync.Mutex
	nodes map[string]*node
	now   func() time.Time
	// onWasm, when set, hears of every report that shows new failures.
	onWasm func(WasmEvent)
}

type node struct {
	at     time.Time
	active map[string]int64 // by listener stat prefix, e.g. 127.0.0.1_10000
	// quota holds the handshake module's live-stream gauges: by policy,
	// then identity; unlabelled the streams of identities without one.
	quota      map[string]map[string]int64
	quotaN     int
	unlabelled int64
	// refused holds the module's refusal counters by reason, then the
	// identity label it writes (made safe, "other" past its bound).
	refused  map[string]map[string]uint64
	refusedN int
	// reloads holds Envoy's cumulative wasm.<plugin>.vm_reload_* counters
	// by name; wasm is what they add up to.
	reloads map[string]uint64
	wasm    WasmHealth
}

// WasmHealth is what a node's counters say of its Wasm VMs. Envoy's
// FAIL_RELOAD policy starts a new VM on the first request or connection
// after a VM traps, and counts it for each plugin that finds its VM
// failed: a crash shows when traffic next needs the VM, not before.
type WasmHealth struct {
	// Reloads are VMs started in place of a failed one (counted once per
	// plugin of the VM), Failures the reloads that failed or were held
	// back by the backoff: the VM was still failed then.
	Reloads, Failures uint64
	// LastFailure is when a report first showed the latest of them.
	LastFailure time.Time
	// Failing says the latest report showed failures and no successful
	// reload.
	Failing bool
}

// WasmEvent is a report that showed new VM failures on a node: Reloads
// and Failures are the increases, Health the node's state after it.
type WasmEvent struct {
	Node              string
	Reloads, Failures uint64
	Health            WasmHealth
}

// New returns an empty store; onWasm, if not nil, is called (without the
// store's lock) for every report that shows a node's VM failed.
func New(onWasm func(WasmEvent)) *Store {
	return &Store{nodes: map[string]*node{}, now: time.Now, onWasm: onWasm}
}

// Register adds the metrics service to a gRPC server (the xDS one: Envoy
// reaches it through its xDS cluster).
func (s *Store) Register(g *grpc.Server) { metricsv3.RegisterMetricsServiceServer(g, s) }

// StreamMetrics reads one Envoy's stream; the node is named in the first
// message only. Its numbers are dropped when the stream ends.
func (s *Store) StreamMetrics(stream grpc.ClientStreamingServer[metricsv3.StreamMetricsMessage, metricsv3.StreamMetricsResponse]) error {
	var id string
	defer func() {
		if id != "" {
			s.mu.Lock()
			delete(s.nodes, id)
			s.mu.Unlock()
		}
	}()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&metricsv3.StreamMetricsResponse{})
		}
		if err != nil {
			return err
		}
		if n := msg.GetIdentifier().GetNode().GetId(); n != "" && id == "" {
			id = n
		}
		if id == "" {
			continue
		}
		s.Record(id, msg)
	}
}

const (
	prefix = "listener."
	suffix = ".downstream_cx_active"

	wasmPrefix    = "wasm."
	reloadSuccess = ".vm_reload_success"
	reloadFailure = ".vm_reload_failure"
	reloadBackoff = ".vm_reload_backoff"
)

// The handshake module's gauges of live streams under quotas.
const (
	quotaLive       = contract.WasmStatPrefix + contract.MetricQuotaLivePrefix
	quotaUnlabelled = contract.WasmStatPrefix + contract.MetricQuotaLiveUnlabelled
	quotaDenied     = contract.WasmStatPrefix + contract.MetricQuotaDeniedPrefix
)

// The native module's forms of them: labelled stats, which Envoy names
// <name>.<label>.<value>...
const (
	nativeLive       = contract.NativeStatPrefix + contract.MetricQuotaLive + "." + contract.LabelPolicy + "."
	nativeIdentity   = "." + contract.LabelIdentity + "."
	nativeUnlabelled = contract.NativeStatPrefix + contract.MetricQuotaLiveUnlabelled
	nativeDenied     = contract.NativeStatPrefix + contract.MetricQuotaDeniedPrefix
)

// wasmForm names a native module's per-identity stat as the Wasm module
// names it, so that one reader serves both builds; other names are
// returned as they are.
func wasmForm(name string) string {
	if name == nativeUnlabelled {
		return quotaUnlabelled
	}
	if rest, ok := strings.CutPrefix(name, nativeLive); ok {
		if policy, identity, ok := strings.Cut(rest, nativeIdentity); ok {
			return quotaLive + policy + "." + identity
		}
		return name
	}
	if rest, ok := strings.CutPrefix(name, nativeDenied); ok {
		if reason, label, ok := strings.Cut(rest, nativeIdentity); ok {
			return quotaDenied + reason + "." + label
		}
	}
	return name
}

// Record keeps what one report of node id says.
func (s *Store) Record(id string, msg *metricsv3.StreamMetricsMessage) {
	found := map[string]int64{}
	reloads := map[string]uint64{}
	var live []quotaGauge
	var refused []quotaRefusals
	unlabelled := int64(-1)
	for _, f := range msg.GetEnvoyMetrics() {
		name := wasmForm(f.GetName())
		if name == quotaUnlabelled {
			for _, m := range f.GetMetric() {
				unlabelled = int64(m.GetGauge().GetValue())
			}
			continue
		}
		if rest, ok := strings.CutPrefix(name, quotaDenied); ok {
			if reason, label, ok := strings.Cut(rest, "."); ok && len(refused) < maxQuotaGauges {
				for _, m := range f.GetMetric() {
					refused = append(refused, quotaRefusals{reason, label, uint64(m.GetCounter().GetValue())})
				}
			}
			continue
		}
		if rest, ok := strings.CutPrefix(name, quotaLive); ok {
			if g, ok := parseQuotaGauge(rest); ok && len(live) < maxQuotaGauges {
				for _, m := range f.GetMetric() {
					g.live = int64(m.GetGauge().GetValue())
				}
				live = append(live, g)
			}
			continue
		}
		if isReloadCounter(name) {
			if len(reloads) < maxWasmStats {
				for _, m := range f.GetMetric() {
					reloads[name] = uint64(m.GetCounter().GetValue())
				}
			}
			continue
		}
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) || len(found) >= maxListeners {
			continue
		}
		listener := strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix)
		// Per-worker copies (listener.X.worker_0.downstream_cx_active) are
		// parts of the total.
		if strings.Contains(listener, ".worker_") {
			continue
		}
		for _, m := range f.GetMetric() {
			found[listener] = int64(m.GetGauge().GetValue())
		}
	}
	if len(found) == 0 && len(reloads) == 0 && len(live) == 0 && len(refused) == 0 && unlabelled < 0 {
		return // a batch with nothing the store keeps
	}
	s.mu.Lock()
	n, ok := s.nodes[id]
	if !ok {
		if len(s.nodes) >= maxNodes {
			s.mu.Unlock()
			return
		}
		n = &node{active: map[string]int64{}, reloads: map[string]uint64{}}
		s.nodes[id] = n
	}
	n.at = s.now()
	n.recordQuota(live, unlabelled)
	n.recordRefusals(refused)
	for k, v := range found {
		if _, ok := n.active[k]; ok || len(n.active) < maxListeners {
			n.active[k] = v
		}
	}
	ev, changed := n.recordReloads(reloads, n.at)
	s.mu.Unlock()
	if changed && s.onWasm != nil {
		ev.Node = id
		s.onWasm(ev)
	}
}

// quotaGauge is one identity's live streams under one policy's quota.
type quotaGauge struct {
	policy, identity string
	live             int64
}

// parseQuotaGauge reads "<policy>.<identity>", both escaped as the module
// writes them.
func parseQuotaGauge(s string) (quotaGauge, bool) {
	p, id, ok := strings.Cut(s, ".")
	if !ok {
		return quotaGauge{}, false
	}
	policy, ok1 := contract.UnescapeStatName(p)
	identity, ok2 := contract.UnescapeStatName(id)
	if !ok1 || !ok2 || policy == "" || identity == "" {
		return quotaGauge{}, false
	}
	return quotaGauge{policy: policy, identity: identity}, true
}

func (n *node) recordQuota(live []quotaGauge, unlabelled int64) {
	if unlabelled >= 0 {
		n.unlabelled = unlabelled
	}
	for _, g := range live {
		if n.quota == nil {
			n.quota = map[string]map[string]int64{}
		}
		ids := n.quota[g.policy]
		if ids == nil {
			ids = map[string]int64{}
			n.quota[g.policy] = ids
		}
		if _, seen := ids[g.identity]; !seen {
			if n.quotaN >= maxQuotaGauges {
				continue
			}
			n.quotaN++
		}
		ids[g.identity] = g.live
	}
}

// quotaRefusals is one of the module's refusal counters.
type quotaRefusals struct {
	reason, label string
	n             uint64
}

func (n *node) recordRefusals(batch []quotaRefusals) {
	for _, r := range batch {
		if n.refused == nil {
			n.refused = map[string]map[string]uint64{}
		}
		labels := n.refused[r.reason]
		if labels == nil {
			labels = map[string]uint64{}
			n.refused[r.reason] = labels
		}
		if _, seen := labels[r.label]; !seen {
			if n.refusedN >= maxQuotaGauges {
				continue
			}
			n.refusedN++
		}
		labels[r.label] = r.n
	}
}

// QuotaRefusals adds up, over the nodes that reported recently, the
// handshakes the module refused over a quota since each Envoy started:
// by reason, then the identity as the module labels it (letters, digits,
// '-' and '_' kept, other bytes '_'; "other" past its bound).
func (s *Store) QuotaRefusals() map[string]map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]uint64{}
	for _, n := range s.nodes {
		if s.now().Sub(n.at) >= stale {
			continue
		}
		for reason, labels := range n.refused {
			if out[reason] == nil {
				out[reason] = map[string]uint64{}
			}
			for l, v := range labels {
				out[reason][l] += v
			}
		}
	}
	return out
}

// QuotaUse is what one node's stats say of the streams under quotas.
type QuotaUse struct {
	// Live is each identity's live streams, by policy then identity;
	// identities with none may be left out.
	Live map[string]map[string]int64
	// Unlabelled is the live streams of identities the node has no gauge
	// for: while it is above 0, an identity the node does not show with
	// live streams may still have some there.
	Unlabelled int64
}

// QuotaUse returns, for every node that reported recently, the live
// streams of each identity under a quota.
func (s *Store) QuotaUse() map[string]QuotaUse {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]QuotaUse{}
	for id, n := range s.nodes {
		if s.now().Sub(n.at) >= stale {
			continue
		}
		u := QuotaUse{Live: map[string]map[string]int64{}, Unlabelled: n.unlabelled}
		for p, ids := range n.quota {
			for ident, v := range ids {
				if v <= 0 {
					continue
				}
				if u.Live[p] == nil {
					u.Live[p] = map[string]int64{}
				}
				u.Live[p][ident] = v
			}
		}
		out[id] = u
	}
	return out
}

func isReloadCounter(name string) bool {
	return strings.HasPrefix(name, wasmPrefix) &&
		(strings.HasSuffix(name, reloadSuccess) || strings.HasSuffix(name, reloadFailure) || strings.HasSuffix(name, reloadBackoff))
}

// recordReloads takes a batch's reload counters and reports whether they
// show failures the node had not shown before. A counter seen for the
// first time counts from zero, so what a node went through before its
// stream (re)connected shows once; a counter lower than before is a
// restarted Envoy, and counts from there.
func (n *node) recordReloads(batch map[string]uint64, at time.Time) (WasmEvent, bool) {
	var ok, failed uint64
	for name, v := range batch {
		old, seen := n.reloads[name]
		if !seen && len(n.reloads) >= maxWasmStats {
			continue
		}
		n.reloads[name] = v
		if v <= old {
			continue
		}
		if strings.HasSuffix(name, reloadSuccess) {
			ok += v - old
		} else {
			failed += v - old
		}
	}
	if ok == 0 && failed == 0 {
		return WasmEvent{}, false
	}
	n.wasm.Reloads += ok
	n.wasm.Failures += failed
	n.wasm.LastFailure = at
	n.wasm.Failing = failed > 0 && ok == 0
	return WasmEvent{Reloads: ok, Failures: failed, Health: n.wasm}, true
}

// Wasm returns the VM health of every node that reports its stats.
func (s *Store) Wasm() map[string]WasmHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]WasmHealth, len(s.nodes))
	for id, n := range s.nodes {
		out[id] = n.wasm
	}
	return out
}

// ActiveConnections returns, for every node that reported recently, the
// connections held now by the listener bound to address (ip:port).
func (s *Store) ActiveConnections(address string) map[string]int64 {
	key := StatPrefix(address)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for id, n := range s.nodes {
		if v, ok := n.active[key]; ok && s.now().Sub(n.at) < stale {
			out[id] = v
		}
	}
	return out
}

// StatPrefix is how Envoy names a listener in its stats when the listener
// sets no stat_prefix: its address with every ':' as '_'.
func StatPrefix(address string) string { return strings.ReplaceAll(address, ":", "_") }

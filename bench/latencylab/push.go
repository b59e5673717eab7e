//go:build linux

package latencylab

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/controlplane/xdstype"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// PushConfig sizes the push measurements: how long a policy change takes
// from the change to the ACK of every node.
type PushConfig struct {
	// Changes is how many changes are timed through the admin API and
	// through the file, each.
	Changes int
	// LargeRoutes is the route count of the large policy, applied
	// LargeRuns times from the small one.
	LargeRoutes, LargeRuns int
	// Nodes simulated xDS nodes (Go ADS clients that ACK everything)
	// follow the control plane beside the Envoy through NodeRuns changes.
	Nodes, NodeRuns int
}

// PushRow is one kind of change, timed from the change until every
// connected node ACKed every type of the new snapshot.
type PushRow struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Nodes       int                `json:"nodes"`
	Latency     voiceprobe.Summary `json:"latency"`
	// Timeline is what happened to the Envoy, each step the median of its
	// offsets from the change.
	Timeline []Step `json:"timeline"`
	Failures int    `json:"failures"`
	Note     string `json:"note,omitempty"`
}

// Step is one moment of a change.
type Step struct {
	What string        `json:"what"`
	At   time.Duration `json:"at_ns"`
}

// pushTimeout bounds the wait for one change's ACKs.
const pushTimeout = 20 * time.Second

// pushes measures every push row. Each row starts from the stack's own
// policy, restored untimed.
func (s *stack) pushes(cfg PushConfig, log io.Writer) ([]*PushRow, error) {
	client, closeClient, err := s.admin()
	if err != nil {
		return nil, err
	}
	defer closeClient()
	var rows []*PushRow
	row := func(name, desc string, n int, body func(i int) string, via func(string) (string, func() error)) {
		if rev, do := s.apply(client, s.body); rev != s.served() {
			if _, err := s.timeChange(rev, do); err != nil {
				s.t.Errorf("restoring the policy before %s: %v", name, err)
			}
		}
		r := s.pushRow(name, desc, n, 0, func(i int) (string, func() error) { return via(body(i)) })
		fmt.Fprintf(log, ">> push %s: p50 %v p99 %v (%d changes, %d failures)\n", r.Name, r.Latency.P50, r.Latency.P99, r.Latency.Count, r.Failures)
		rows = append(rows, r)
	}
	api := func(body string) (string, func() error) { return s.apply(client, body) }
	n := cfg.Changes
	row("api: route added", "admin API apply adding one REST route (RDS only: routes carry their auth policy)", n,
		func(i int) string { return s.withRoutes(i+1, 0) }, api)
	row("api: route replaced", "admin API apply removing one route and adding another (RDS only)", n,
		func(i int) string { return s.withRoutes(1, i+1) }, api)
	row("api: key added", "admin API apply adding a key to the auth policy an HTTP and a tcp route share (ECDS only: two filter configs)", n,
		s.withKey, api)
	row("api: endpoint added", "admin API apply adding an endpoint to the REST back end (EDS only)", n,
		s.withEndpoint, api)
	row("file: route added", "policy file rewritten adding one REST route, watched (RDS only)", n,
		func(i int) string { return s.withRoutes(i+1, 0) }, s.writeFile)
	for _, r := range s.largeRows(client, cfg) {
		fmt.Fprintf(log, ">> push %s: p50 %v p99 %v (%d changes, %d failures)\n", r.Name, r.Latency.P50, r.Latency.P99, r.Latency.Count, r.Failures)
		rows = append(rows, r)
	}
	nodes, err := s.nodesRow(client, cfg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, ">> push %s: p50 %v p99 %v (%d changes, %d failures)\n", nodes.Name, nodes.Latency.P50, nodes.Latency.P99, nodes.Latency.Count, nodes.Failures)
	return append(rows, nodes), nil
}

// served is the revision the control plane serves.
func (s *stack) served() string {
	_, rev := s.cp.Policy()
	return rev
}

// withRoutes is the stack's policy with n more REST routes, named after
// generation gen: withRoutes(n+1, gen) adds one route to withRoutes(n,
// gen), withRoutes(1, gen+1) replaces the one of withRoutes(1, gen).
func (s *stack) withRoutes(n, gen int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - { name: push-%d-%d, match: { prefix: /push/%d/%d/ }, kind: http, backend: rest }\n", gen, i, gen, i)
	}
	return strings.Replace(s.body, "routes:\n", "routes:\n"+b.String(), 1)
}

// withKey is the stack's policy with the i-th extra HS256 key in its auth
// policy.
func (s *stack) withKey(i int) string {
	secret := make([]byte, 32)
	copy(secret, fmt.Sprintf("push-key-%d", i))
	key := fmt.Sprintf("        - { kty: oct, kid: push-%d, alg: HS256, k: %s }\n", i, b64u(secret))
	return strings.Replace(s.body, "      keys:\n", "      keys:\n"+key, 1)
}

// withEndpoint is the stack's policy with the i-th extra endpoint in the
// REST back end (nothing listens there; no request is sent meanwhile).
func (s *stack) withEndpoint(i int) string {
	return strings.Replace(s.body, `name: rest, endpoints: [`, fmt.Sprintf(`name: rest, endpoints: ["127.0.0.1:%d", `, 20000+i%10000), 1)
}

// largeRouteCount is the route count of the large policy, want but no
// more than a policy may hold, and how many routes that adds to the small
// policy.
func (s *stack) largeRouteCount(want int) (total, added int) {
	small, err := policy.Decode([]byte(s.body))
	if err != nil {
		s.t.Fatal(fmt.Errorf("the small policy: %w", err))
	}
	total = min(want, policy.MaxRoutes)
	return total, max(total-len(small.GetRoutes()), 0)
}

// withLargeRoutes is the stack's policy with n more routes, half of them
// WebSocket routes with auth, as a large gateway's would be.
func (s *stack) withLargeRoutes(n, gen int) string {
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(&b, "  - { name: l%d, match: { prefix: /large/%d/%d/ }, kind: websocket, backend: voice, auth: demo }\n", i, gen, i)
		} else {
			fmt.Fprintf(&b, "  - { name: l%d, match: { prefix: /large/%d/%d/ }, kind: http, backend: rest }\n", i, gen, i)
		}
	}
	return strings.Replace(s.body, "routes:\n", "routes:\n"+b.String(), 1)
}

// admin connects to the control plane's admin API.
func (s *stack) admin() (adminv1.AdminServiceClient, func(), error) {
	conn, err := grpc.NewClient(s.cp.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearerToken(adminToken)), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		return nil, nil, fmt.Errorf("admin API: %w", err)
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// apply returns the revision body will have and a change that applies it
// through the admin API.
func (s *stack) apply(client adminv1.AdminServiceClient, body string) (string, func() error) {
	p, err := policy.Parse([]byte(body))
	if err != nil {
		s.t.Fatal(err)
	}
	return policy.Revision(p), func() error {
		_, current := s.cp.Policy()
		ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
		defer cancel()
		_, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: p, ExpectedRevision: current})
		return err
	}
}

// writeFile returns the revision body will have and a change that writes
// it to the watched policy file, as an editor would (write, then rename).
func (s *stack) writeFile(body string) (string, func() error) {
	p, err := policy.Parse([]byte(body))
	if err != nil {
		s.t.Fatal(err)
	}
	return policy.Revision(p), func() error { return writeAtomic(s.file, body) }
}

// pushRow times n changes; change(i) says what the i-th change will
// serve and how to make it.
func (s *stack) pushRow(name, desc string, n, nodes int, change func(i int) (string, func() error)) *PushRow {
	row := &PushRow{Name: name, Description: desc, Nodes: nodes + 1}
	var samples []time.Duration
	steps := map[string][]time.Duration{}
	for i := range n {
		rev, do := change(i)
		c, err := s.timeChange(rev, do)
		if err != nil {
			row.Failures++
			row.Note = err.Error()
			continue
		}
		samples = append(samples, c.total)
		for what, at := range c.steps {
			steps[what] = append(steps[what], at)
		}
	}
	row.Latency, row.Timeline = voiceprobe.Summarize(samples), medians(steps)
	return row
}

// change is one timed change: until the last ACK, and the Envoy's steps.
type change struct {
	total time.Duration
	steps map[string]time.Duration
}

// timeChange makes a change that serves revision rev and waits until every
// connected node ACKed every type of the snapshot that serves it.
func (s *stack) timeChange(rev string, do func() error) (change, error) {
	events, unsubscribe := s.cp.XDS().Status().Subscribe()
	defer unsubscribe()
	c := change{steps: map[string]time.Duration{}}
	start := time.Now()
	if err := do(); err != nil {
		return c, err
	}
	c.steps["change made (call returned)"] = time.Since(start)
	// Events only note when the policy was served; the ACKs are checked on
	// a short tick, not per event: with 101 nodes a change makes hundreds
	// of events, and checking each would load the CPU the control plane
	// runs on.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(pushTimeout)
	for done := false; !done; {
		select {
		case e := <-events:
			if e.Kind == xds.EventPolicy && e.Revision == rev {
				c.steps["served (snapshot set)"] = e.At.Sub(start)
			}
		case <-tick.C:
			if last, ok := s.ackedAll(rev); ok {
				c.total, done = last.Sub(start), true
			}
		case <-deadline:
			return c, fmt.Errorf("revision %s not ACKed by every node within %v", rev, pushTimeout)
		}
	}
	for drained := false; !drained; {
		select {
		case e := <-events:
			if e.Kind == xds.EventPolicy && e.Revision == rev {
				c.steps["served (snapshot set)"] = e.At.Sub(start)
			}
		default:
			drained = true
		}
	}
	for _, n := range s.cp.XDS().Status().Nodes() {
		if n.ID != s.node {
			continue
		}
		for typ, ts := range n.Types {
			if ts.AckedAt.After(start) {
				c.steps[abbrev(typ)+" sent"] = ts.SentAt.Sub(start)
				c.steps[abbrev(typ)+" ACKed"] = ts.AckedAt.Sub(start)
			}
		}
	}
	return c, nil
}

// ackedAll reports whether revision rev is served and every connected node
// ACKed every type of it, and when the last of those ACKs came.
func (s *stack) ackedAll(rev string) (time.Time, bool) {
	if _, cur := s.cp.Policy(); cur != rev {
		return time.Time{}, false
	}
	latest := s.cp.XDS().Versions()
	var last time.Time
	for _, n := range s.cp.XDS().Status().Nodes() {
		if !n.Connected {
			continue
		}
		for typ, v := range latest {
			ts := n.Types[typ]
			if ts.Acked != v {
				return time.Time{}, false
			}
			if ts.AckedAt.After(last) {
				last = ts.AckedAt
			}
		}
	}
	return last, true
}

// largeRows apply the large policy from the small one, and change one
// route in it.
func (s *stack) largeRows(client adminv1.AdminServiceClient, cfg PushConfig) []*PushRow {
	n, added := s.largeRouteCount(cfg.LargeRoutes)
	grow := &PushRow{Name: fmt.Sprintf("api: policy of %d routes", n), Description: fmt.Sprintf("admin API apply of %d routes (half WebSocket with auth) added to the small policy, making %d, to the Envoy's ACK", added, n), Nodes: 1}
	one := &PushRow{Name: fmt.Sprintf("api: 1 of %d routes changed", n), Description: fmt.Sprintf("admin API apply changing one route of %d, to the Envoy's ACK", n), Nodes: 1}
	var growS, oneS []time.Duration
	growSteps, oneSteps := map[string][]time.Duration{}, map[string][]time.Duration{}
	for run := range cfg.LargeRuns {
		for _, x := range []struct {
			row     *PushRow
			body    string
			samples *[]time.Duration
			steps   map[string][]time.Duration
		}{
			{grow, s.withLargeRoutes(added, 2*run), &growS, growSteps},
			{one, strings.Replace(s.withLargeRoutes(added, 2*run), "/large/"+fmt.Sprint(2*run)+"/1/", "/large/changed/1/", 1), &oneS, oneSteps},
			{nil, s.body, nil, nil}, // back to the small policy, untimed
		} {
			rev, do := s.apply(client, x.body)
			c, err := s.timeChange(rev, do)
			if x.row == nil {
				continue
			}
			if err != nil {
				x.row.Failures++
				x.row.Note = err.Error()
				continue
			}
			*x.samples = append(*x.samples, c.total)
			for what, at := range c.steps {
				x.steps[what] = append(x.steps[what], at)
			}
		}
	}
	for _, x := range []struct {
		row     *PushRow
		samples []time.Duration
		steps   map[string][]time.Duration
	}{{grow, growS, growSteps}, {one, oneS, oneSteps}} {
		x.row.Latency = voiceprobe.Summarize(x.samples)
		x.row.Timeline = medians(x.steps)
	}
	return []*PushRow{grow, one}
}

// abbrev is a type's discovery service name, e.g. RDS.
func abbrev(typeURL string) string {
	for _, k := range xdstype.Kinds() {
		if k.URL == typeURL {
			return k.Abbrev
		}
	}
	return xdstype.Name(typeURL)
}

func medians(steps map[string][]time.Duration) []Step {
	var out []Step
	for what, at := range steps {
		out = append(out, Step{What: what, At: voiceprobe.Summarize(at).P50})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// nodesRow connects simulated nodes beside the Envoy and times changes
// through the admin API until all of them ACKed.
func (s *stack) nodesRow(client adminv1.AdminServiceClient, cfg PushConfig) (*PushRow, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := testkit.FollowNodes(ctx, s.cp.XDSAddr(), cfg.Nodes, "bench-sim", testkit.SubscribeAll(s.cp.Resources())); err != nil {
		return nil, fmt.Errorf("simulated nodes: %w", err)
	}
	if rev, do := s.apply(client, s.body); rev != s.served() {
		if _, err := s.timeChange(rev, do); err != nil {
			return nil, err
		}
	}
	return s.pushRow(fmt.Sprintf("api: route added, %d nodes", cfg.Nodes+1), fmt.Sprintf("admin API apply adding one REST route, to the ACK of the Envoy and %d simulated nodes", cfg.Nodes),
		cfg.NodeRuns, cfg.Nodes, func(i int) (string, func() error) { return s.apply(client, s.withRoutes(i+1, 1)) }), nil
}

// adminToken is the lab control plane's admin API token.
const adminToken = "directpipe-lab-admin-token"

// bearerToken sends the admin token with every call.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// writeAtomic writes body next to path and renames it over path.
func writeAtomic(path, body string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

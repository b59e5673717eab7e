//go:build linux

package testkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// FleetScaleOptions size a fleet-scale measurement: replica processes
// serving simulated nodes over mutual TLS.
type FleetScaleOptions struct {
	Nodes int
	// Policies are policy files: the first seeds the replicas, and each
	// change applies the next one in turn through the admin API, so they
	// should differ in routes only (no listener drains).
	Policies []string
	// Changes is how many changes FleetPush times.
	Changes int
	// Timeout bounds each wait (every node synced, ACKed or moved).
	Timeout time.Duration
}

// FleetPush is one replica serving Nodes simulated nodes.
type FleetPush struct {
	Nodes int
	// Connect is from the first node's dial until every node synced (the
	// replica admits new streams at its rate, so this is mostly the rate).
	Connect time.Duration
	// Acks are, for every change and every node, the time from the apply
	// call until that node ACKed the change, sorted.
	Acks []time.Duration
	// Slowest is each change's last ACK.
	Slowest []time.Duration
	// Idle is the replica with no node; Loaded with every node synced.
	Idle, Loaded Memory
}

// Memory is a control plane's memory as its /metrics reports it.
type Memory struct {
	// HeapBytes is the lowest live heap (go_memstats_heap_alloc_bytes)
	// sampled over a few seconds: close to what a collection leaves.
	HeapBytes int64
	RSSBytes  int64
	// Goroutines at the last sample.
	Goroutines int64
}

// PerNode is the memory each node costs: loaded minus idle, divided.
func (p *FleetPush) PerNode() Memory {
	return Memory{
		HeapBytes:  (p.Loaded.HeapBytes - p.Idle.HeapBytes) / int64(p.Nodes),
		RSSBytes:   (p.Loaded.RSSBytes - p.Idle.RSSBytes) / int64(p.Nodes),
		Goroutines: (p.Loaded.Goroutines - p.Idle.Goroutines) / int64(p.Nodes),
	}
}

// MeasureFleetPush starts one replica (a bin/directpipe process on its
// policy file) with xDS over mutual TLS, measures its memory, connects
// opts.Nodes simulated nodes, measures it again, and times opts.Changes
// policy changes from the apply until every node ACKed.
func MeasureFleetPush(t T, opts FleetScaleOptions) (*FleetPush, error) {
	t.Helper()
	raiseFileLimit(t, opts.Nodes)
	pki := newFleetPKI(t)
	seed := filepath.Join(t.TempDir(), "policy.yaml")
	if err := copyPolicy(opts.Policies[0], seed); err != nil {
		return nil, err
	}
	r := StartReplica(t, ReplicaOptions{Name: "cp1", SeedPolicy: seed, TokenFile: pki.tokenFile, Args: pki.serverArgs})
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		return nil, err
	}
	admin, err := dialAdmin(r.AdminAddr)
	if err != nil {
		return nil, err
	}
	defer admin.close()
	res := &FleetPush{Nodes: opts.Nodes}
	if res.Idle, err = r.Memory(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	fleet, err := StartSimFleet(ctx, SimFleetOptions{Prefix: "sim", Nodes: opts.Nodes, Addrs: []string{r.XDSAddr}, CA: pki.ca, Subs: Wildcard()})
	if err != nil {
		return nil, err
	}
	defer fleet.Stop()
	res.Connect = time.Since(start)
	if res.Loaded, err = r.Memory(ctx); err != nil {
		return nil, err
	}
	probe := fleet.nodes[0].id
	for i := range opts.Changes {
		acks, err := admin.timeChange(ctx, fleet, probe, opts.Policies[(i+1)%len(opts.Policies)])
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", i+1, err)
		}
		res.Acks = append(res.Acks, acks...)
		res.Slowest = append(res.Slowest, acks[len(acks)-1])
	}
	slices.Sort(res.Acks)
	return res, nil
}

// Failover is three replicas on etcd serving Nodes simulated nodes, one
// of them killed.
type Failover struct {
	Nodes int
	// Moved are the killed replica's nodes.
	Moved int
	// Resync is, for each moved node, the time from the kill until its
	// new stream with a surviving replica had every type ACKed, sorted.
	Resync []time.Duration
	// Status is from the kill until the survivors' admin API showed every
	// moved node connected to one of them and SYNCED (polled, so a little
	// later than the last Resync).
	Status time.Duration
	// Refused counts streams the survivors refused over their rate, and
	// that came back after a back-off.
	Refused int
}

// MeasureFailover starts three replicas on a one-member etcd with
// opts.Nodes simulated nodes spread over them, kills one with SIGKILL and
// waits until every node it served is SYNCED on another.
func MeasureFailover(t T, opts FleetScaleOptions) (*Failover, error) {
	t.Helper()
	raiseFileLimit(t, opts.Nodes)
	pki := newFleetPKI(t)
	etcd := StartEtcd(t, 1)
	var replicas []*Replica
	var addrs []string
	for i := range 3 {
		r := StartReplica(t, ReplicaOptions{
			Name: fmt.Sprintf("cp%d", i+1), Store: "etcd://" + etcd.Endpoints(), SeedPolicy: opts.Policies[0],
			TokenFile: pki.tokenFile, Args: pki.serverArgs,
		})
		replicas = append(replicas, r)
		addrs = append(addrs, r.XDSAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	for _, r := range replicas {
		if err := r.WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	fleet, err := StartSimFleet(ctx, SimFleetOptions{Prefix: "sim", Nodes: opts.Nodes, Addrs: addrs, CA: pki.ca, Subs: Wildcard()})
	if err != nil {
		return nil, err
	}
	defer fleet.Stop()
	victim, survivors := replicas[1], []*Replica{replicas[0], replicas[2]}
	moved := fleet.On(victim.XDSAddr)
	refusedBefore := fleet.Refused()
	res := &Failover{Nodes: opts.Nodes, Moved: len(moved)}
	killed := time.Now()
	victim.Kill()
	ctx, cancel = context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	if res.Resync, err = fleet.WaitMoved(ctx, moved, victim.XDSAddr, killed); err != nil {
		return nil, err
	}
	err = poll(ctx, func() (bool, error) {
		synced := map[string]bool{}
		for _, r := range survivors {
			ids, err := syncedOn(ctx, r)
			if err != nil {
				return false, err
			}
			maps.Copy(synced, ids)
		}
		for _, id := range moved {
			if !synced[id] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the survivors' status: %w", err)
	}
	res.Status = time.Since(killed)
	res.Refused = fleet.Refused() - refusedBefore
	return res, nil
}

// raiseFileLimit makes room for nodes connections in this process (and
// in the replicas it starts, which inherit the limit): each simulated
// node holds a socket, and a soft limit of 1,024 is common. Go raises the
// soft limit to the hard one at start; this fails loudly when even the
// hard limit is too low.
func raiseFileLimit(t T, nodes int) {
	t.Helper()
	need := uint64(nodes) + 512 // the replicas' and the test's own files
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("read the open-file limit: %v", err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		t.Fatalf("%d simulated nodes need %d open files; the hard limit is %d (raise it with ulimit -Hn)", nodes, need, lim.Max)
	}
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raise the open-file limit to %d: %v", need, err)
	}
}

// syncedOn is the set of nodes replica r serves itself, connected and
// SYNCED on every type, as its admin API reports them.
func syncedOn(ctx context.Context, r *Replica) (map[string]bool, error) {
	admin, err := dialAdmin(r.AdminAddr)
	if err != nil {
		return nil, err
	}
	defer admin.close()
	resp, err := admin.ListNodes(ctx, &adminv1.ListNodesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list nodes on %s: %w", r.Name, err)
	}
	out := map[string]bool{}
	for _, n := range resp.GetNodes() {
		if n.GetReplica() != r.Name || !n.GetConnected() || len(n.GetResources()) == 0 {
			continue
		}
		ok := true
		for _, rs := range n.GetResources() {
			ok = ok && rs.GetState() == adminv1.SyncState_SYNCED
		}
		out[n.GetId()] = ok
	}
	return out, nil
}

// Wildcard subscribes to every resource of every type the control plane
// serves, without naming any.
func Wildcard() Subscription {
	subs := Subscription{}
	for _, k := range xdstype.Kinds() {
		subs[k.URL] = nil
	}
	return subs
}

// fleetPKI is a CA, the replicas' server certificate and the admin token.
type fleetPKI struct {
	ca         *certs.Authority
	serverArgs []string
	tokenFile  string
}

// fleetAdminToken is the replicas' admin token in fleet measurements.
const fleetAdminToken = "directpipe-fleet-admin-token"

func newFleetPKI(t T) *fleetPKI {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	files := certs.Files{Dir: dir}
	caCert, caKey := files.CA()
	ca, err := certs.LoadAuthority(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := files.Server()
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(fleetAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fleetPKI{ca: ca, tokenFile: tokenFile, serverArgs: []string{"-xds-tls-cert", cert, "-xds-tls-key", key, "-xds-client-ca", caCert}}
}

func copyPolicy(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// adminClient is a replica's admin API with the fleet's token.
type adminClient struct {
	adminv1.AdminServiceClient
	conn *grpc.ClientConn
}

func dialAdmin(addr string) (*adminClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(fleetToken{}), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("admin API %s: %w", addr, err)
	}
	return &adminClient{AdminServiceClient: adminv1.NewAdminServiceClient(conn), conn: conn}, nil
}

func (a *adminClient) close() { a.conn.Close() }

type fleetToken struct{}

func (fleetToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + fleetAdminToken}, nil
}

func (fleetToken) RequireTransportSecurity() bool { return false }

// timeChange applies the policy in file and returns, for every node of
// fleet, the time from the apply call until it ACKed the new versions,
// sorted. probe is a connected node the admin API reports versions for.
func (a *adminClient) timeChange(ctx context.Context, fleet *SimFleet, probe, file string) ([]time.Duration, error) {
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p, err := policy.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	cur, err := a.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil {
		return nil, err
	}
	before, err := a.versions(ctx, probe)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := a.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: p, ExpectedRevision: cur.GetRevision()}); err != nil {
		return nil, fmt.Errorf("apply %s: %w", file, err)
	}
	var after map[string]string
	err = poll(ctx, func() (bool, error) {
		after, err = a.versions(ctx, probe)
		return err == nil && !maps.Equal(before, after), err
	})
	if err != nil {
		return nil, errors.Join(errors.New("the change was not served"), err)
	}
	return fleet.WaitAcked(ctx, after, start)
}

// versions are the versions the control plane serves, by type URL.
func (a *adminClient) versions(ctx context.Context, node string) (map[string]string, error) {
	resp, err := a.GetConfig(ctx, &adminv1.GetConfigRequest{NodeId: node})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range xdstype.Kinds() {
		if v, ok := resp.GetVersions()[k.Name()]; ok {
			out[k.URL] = v
		}
	}
	return out, nil
}

// Memory reads the replica's live heap (the lowest of a few samples over
// two seconds) and resident set from its /metrics.
func (r *Replica) Memory(ctx context.Context) (Memory, error) {
	m := Memory{HeapBytes: -1}
	for range 20 {
		vals, err := r.metrics(ctx, "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "go_goroutines")
		if err != nil {
			return Memory{}, err
		}
		if h := int64(vals[0]); m.HeapBytes < 0 || h < m.HeapBytes {
			m.HeapBytes = h
		}
		m.RSSBytes, m.Goroutines = int64(vals[1]), int64(vals[2])
		select {
		case <-ctx.Done():
			return Memory{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return m, nil
}

// metrics reads unlabelled samples from the replica's /metrics.
func (r *Replica) metrics(ctx context.Context, names ...string) ([]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.MetricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	found := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			found[name] = v
		}
	}
	out := make([]float64, len(names))
	for i, n := range names {
		v, ok := found[n]
		if !ok {
			return nil, fmt.Errorf("replica %s: no %s in /metrics", r.Name, n)
		}
		out[i] = v
	}
	return out, sc.Err()
}

// FleetPolicies writes the example policy and the same with one more REST
// route: two policies a change alternates between, touching routes only.
func FleetPolicies(t T) []string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(filepath.Join(root, "examples", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const extra = "routes:\n  - { name: fleet-change, match: { prefix: /fleet-change/ }, kind: http, backend: rest }\n"
	changed := strings.Replace(string(body), "routes:\n", extra, 1)
	if changed == string(body) {
		t.Fatal("examples/policy.yaml has no routes: section")
	}
	dir := t.TempDir()
	var files []string
	for i, b := range []string{string(body), changed} {
		f := filepath.Join(dir, fmt.Sprintf("policy-%d.yaml", i))
		if err := os.WriteFile(f, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

//go:build !wasip1

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/dpctl"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// haFleet is three control-plane replicas (processes) on a three-member
// etcd, one Envoy whose bootstrap lists all three, and the back end.
type haFleet struct {
	t        *testing.T
	idp      *fakeIDP
	etcd     *testkit.Etcd
	replicas []*testkit.Replica
	envoy    *testkit.Envoy
	backend  *testkit.Backend
	params   policyParams
	node     string
}

func startHAFleet(t *testing.T) *haFleet {
	t.Helper()
	f := &haFleet{t: t, etcd: testkit.StartEtcd(t, 3), backend: testkit.StartBackend(t), idp: startFakeIDP(t)}
	f.params = policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: f.backend.VoiceAddr, REST: f.backend.RESTAddr,
		VoiceEndpoints: []string{f.backend.VoiceAddr}, Keys: []jwk{devKey()}, JWKSURL: f.idp.url,
	}
	seed := policyFile(t, f.params)
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var xdsAddrs []string
	for i := range 3 {
		r := testkit.StartReplica(t, testkit.ReplicaOptions{
			Name: fmt.Sprintf("cp%d", i+1), Store: "etcd://" + f.etcd.Endpoints(), SeedPolicy: seed, TokenFile: tokenFile,
		})
		f.replicas = append(f.replicas, r)
		xdsAddrs = append(xdsAddrs, r.XDSAddr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, r := range f.replicas {
		if err := r.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.node = "e2e-ha"
	f.envoy = testkit.StartEnvoy(t, testkit.EnvoyOptions{NodeID: f.node, XDSAddrs: xdsAddrs})
	f.waitHTTP(t, "/api/health", http.StatusOK)
	return f
}

func (f *haFleet) waitHTTP(t *testing.T, path string, status int) {
	t.Helper()
	waitFor(t, 30*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + f.params.Listen + path)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == status, fmt.Sprintf("GET %s: %d, want %d", path, resp.StatusCode, status)
	})
}

// dpctl runs dpctl against replica r.
func (f *haFleet) dpctl(r *testkit.Replica, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	full := append([]string{"--addr", r.AdminAddr, "--token", adminToken}, args...)
	code := dpctl.Run(context.Background(), full, &out, &errb)
	return code, out.String(), errb.String()
}

type haNode struct {
	ID        string `json:"id"`
	Replica   string `json:"replica"`
	Connected bool   `json:"connected"`
	Resources []struct {
		Type   string `json:"type"`
		State  string `json:"state"`
		Latest string `json:"latest_version"`
		Acked  string `json:"acked_version"`
		// LastNACK is kept after later ACKs.
		LastNACK *struct {
			Version string `json:"version"`
			Error   string `json:"error"`
		} `json:"last_nack"`
	} `json:"resources"`
}

// nodeVia is the Envoy's status as replica r reports it.
func (f *haFleet) nodeVia(r *testkit.Replica) (haNode, string) {
	code, out, errs := f.dpctl(r, "-o", "json", "status")
	if code != 0 {
		return haNode{}, "dpctl status: " + errs
	}
	var doc struct {
		Nodes []haNode `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return haNode{}, err.Error()
	}
	for _, n := range doc.Nodes {
		if n.ID == f.node && n.Connected {
			return n, out
		}
	}
	return haNode{}, "node not connected:\n" + out
}

// synced reports whether the node ACKed every type's latest version, as
// replica r sees it, and on which replica; latest, when set, must be the
// versions the node runs.
func (n haNode) synced() bool {
	if len(n.Resources) != 5 {
		return false
	}
	for _, r := range n.Resources {
		if r.State != "SYNCED" {
			return false
		}
	}
	return true
}

func (n haNode) versions() string {
	var vs []string
	for _, r := range n.Resources {
		vs = append(vs, r.Type+"="+r.Acked)
	}
	return strings.Join(vs, " ")
}

func (f *haFleet) revision(r *testkit.Replica) string {
	code, out, errs := f.dpctl(r, "-o", "json", "policy", "get")
	if code != 0 {
		f.t.Fatalf("dpctl policy get via %s: %s", r.Name, errs)
	}
	var doc struct {
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		f.t.Fatal(err)
	}
	return doc.Revision
}

// servingReplica is the replica the Envoy is connected to.
func (f *haFleet) servingReplica() *testkit.Replica {
	f.t.Helper()
	var name string
	waitFor(f.t, 30*time.Second, func() (bool, string) {
		for _, r := range f.replicas {
			if !r.Alive() {
				continue
			}
			n, msg := f.nodeVia(r)
			if !n.synced() {
				return false, msg
			}
			name = n.Replica
			return true, ""
		}
		return false, "no replica alive"
	})
	for _, r := range f.replicas {
		if r.Name == name {
			return r
		}
	}
	f.t.Fatalf("no replica named %q", name)
	return nil
}

func (f *haFleet) survivors() []*testkit.Replica {
	var out []*testkit.Replica
	for _, r := range f.replicas {
		if r.Alive() {
			out = append(out, r)
		}
	}
	return out
}

// TestHAReplicas runs three replicas on a three-member etcd with one Envoy
// and 50 voice streams sending real-time frames for the whole test, while
// the replica serving Envoy is killed with SIGKILL, policies are applied
// through one replica and served by the others, two applies race on one
// revision, and the etcd leader is killed. No stream may close, no frame
// may be lost or reordered, and no listener may change or drain.
func TestHAReplicas(t *testing.T) {
	f := startHAFleet(t)
	ctx := context.Background()
	stats := func() (modified, draining int64) {
		var err error
		if modified, err = f.envoy.Stat(ctx, "listener_manager.listener_modified"); err != nil {
			t.Fatal(err)
		}
		if draining, err = f.envoy.Stat(ctx, "listener_manager.total_filter_chains_draining"); err != nil {
			t.Fatal(err)
		}
		return modified, draining
	}
	modifiedBefore, drainingBefore := stats()

	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, err := voiceprobe.Run(ctx, voiceprobe.Config{
			URL:     "ws://" + f.params.Listen + "/v1/voice",
			Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: 50, Frames: 100000, Interval: 20 * time.Millisecond,
			Stop: stop, Drain: 10 * time.Second,
		})
		if err != nil {
			t.Error(err)
		}
		results <- res
	}()
	streamsDone := false
	finishStreams := func() *voiceprobe.Result {
		if streamsDone {
			return nil
		}
		streamsDone = true
		close(stop)
		return <-results
	}
	defer finishStreams()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := f.envoy.WaitStat(wctx, "http.public.downstream_cx_upgrades_active", func(v int64) bool { return v >= 50 }); err != nil {
		t.Fatal(err)
	}
	cancel()

	t.Run("kill the serving replica", func(t *testing.T) {
		victim := f.servingReplica()
		before, _ := f.nodeVia(victim)
		killed := time.Now()
		victim.Kill()
		var after haNode
		waitFor(t, 60*time.Second, func() (bool, string) {
			for _, r := range f.survivors() {
				n, msg := f.nodeVia(r)
				if n.Replica == victim.Name || !n.synced() {
					return false, msg
				}
				after = n
			}
			return true, ""
		})
		t.Logf("failover: %s killed; node SYNCED on %s after %v, as every survivor reports it (measurement, not asserted)",
			victim.Name, after.Replica, time.Since(killed).Round(time.Millisecond))
		if before.versions() != after.versions() {
			t.Errorf("the new replica serves other versions than the dead one:\nbefore %s\nafter  %s", before.versions(), after.versions())
		}
		code, table, _ := f.dpctl(f.survivors()[0], "status")
		t.Logf("dpctl status through %s:\n%s", f.survivors()[0].Name, table)
		if code != 0 || !strings.Contains(table, after.Replica) {
			t.Errorf("status table does not name the serving replica:\n%s", table)
		}
	})

	t.Run("apply through one replica, served by the others", func(t *testing.T) {
		live := f.survivors()
		a, b := live[0], live[len(live)-1]
		p := f.params
		p.ExtraRoutes = append(p.ExtraRoutes, route{Name: "ha-1", Prefix: "/routes/ha-1"})
		file := policyFile(t, p)
		// The text as written travels with the policy: another replica
		// shows it back, comments and all.
		const comment = "# applied through one replica, read through another\n"
		if body, err := os.ReadFile(file); err != nil || os.WriteFile(file, append([]byte(comment), body...), 0o644) != nil {
			t.Fatal("test setup: cannot prepend a comment to the policy file")
		}
		start := time.Now()
		code, out, errs := f.dpctl(a, "policy", "apply", "-f", file)
		if code != 0 {
			t.Fatalf("apply via %s: %s%s", a.Name, out, errs)
		}
		applied := time.Since(start)
		rev := f.revision(a)
		waitFor(t, 30*time.Second, func() (bool, string) {
			for _, r := range live {
				if got := f.revision(r); got != rev {
					return false, fmt.Sprintf("%s serves %s, want %s", r.Name, got, rev)
				}
			}
			n, msg := f.nodeVia(b)
			return n.synced(), msg
		})
		t.Logf("apply-to-fleet ACK: apply via %s returned after %v; every replica served %s and the Envoy ACKed it after %v (measurement, not asserted)",
			a.Name, applied.Round(time.Millisecond), rev, time.Since(start).Round(time.Millisecond))
		f.waitHTTP(t, "/routes/ha-1", http.StatusOK)
		if code, got, errs := f.dpctl(b, "policy", "get"); code != 0 || !strings.Contains(got, comment) {
			t.Errorf("policy get via %s: exit %d %s\n%s", b.Name, code, errs, got)
		}
		f.params = p
		f.sameResources(t)
	})

	t.Run("two applies on one revision: exactly one wins", func(t *testing.T) {
		live := f.survivors()
		base := f.revision(live[0])
		var wg sync.WaitGroup
		codes := make([]int, 2)
		msgs := make([]string, 2)
		for i := range 2 {
			p := f.params
			p.ExtraRoutes = append(p.ExtraRoutes, route{Name: fmt.Sprintf("race-%d", i), Prefix: fmt.Sprintf("/routes/race-%d", i)})
			file := policyFile(t, p)
			r := live[i%len(live)]
			wg.Go(func() {
				var out, errs string
				codes[i], out, errs = f.dpctl(r, "policy", "apply", "-f", file, "--revision", base)
				msgs[i] = out + errs
			})
		}
		wg.Wait()
		wins := 0
		for i := range 2 {
			switch {
			case codes[i] == 0:
				wins++
			case !strings.Contains(msgs[i], "policy changed since the expected revision"):
				t.Errorf("the losing apply's error does not say the revision is stale: %s", msgs[i])
			}
		}
		if wins != 1 {
			t.Fatalf("%d applies won, want exactly 1: %q", wins, msgs)
		}
		t.Logf("race: winner and loser said %q", msgs)
	})

	t.Run("kill the JWKS leader", func(t *testing.T) {
		observer := f.observer(t)
		leader := f.jwksLeader(t, observer, "")
		before := f.ecds(t)
		fetches := f.idp.count()
		leader.Kill()
		var next *testkit.Replica
		waitFor(t, 60*time.Second, func() (bool, string) {
			if got := f.ecds(t); got != before {
				t.Fatalf("Envoy's key config changed while the JWKS leader changed:\nbefore %s\nafter  %s", before, got)
			}
			name, err := observer.Leader(ctx, "jwks")
			if err != nil || name == leader.Name {
				return false, fmt.Sprintf("leader still %q (%v)", name, err)
			}
			if f.idp.count() == fetches {
				return false, "the new leader has not fetched the key set yet"
			}
			next = f.byName(name)
			return true, ""
		})
		t.Logf("JWKS leader %s killed; %s took over and fetched; Envoy's key config unchanged", leader.Name, next.Name)
		// A rotation at the identity provider now reaches Envoy through
		// the new leader.
		f.idp.rotate()
		waitFor(t, 60*time.Second, func() (bool, string) {
			return f.ecds(t) != before, "the rotated key set never reached Envoy"
		})
		n, _ := f.nodeVia(f.survivors()[0])
		t.Logf("after the rotation the node runs %s", n.versions())
	})

	t.Run("kill the etcd leader", func(t *testing.T) {
		leader, err := f.etcd.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listenersBefore := f.listeners(t)
		leader.Kill()
		live := f.survivors()
		p := f.params
		p.ExtraRoutes = append(p.ExtraRoutes, route{Name: "after-leader", Prefix: "/routes/after-leader"})
		file := policyFile(t, p)
		killed := time.Now()
		var refused int
		waitFor(t, 60*time.Second, func() (bool, string) {
			code, out, errs := f.dpctl(live[0], "policy", "apply", "-f", file)
			if code != 0 {
				refused++
			}
			for _, r := range live {
				if ok, _ := r.Ready(ctx); !ok {
					t.Errorf("replica %s stopped being ready while etcd re-elected", r.Name)
				}
			}
			return code == 0, out + errs
		})
		t.Logf("etcd leader %s killed: an apply succeeded after %v (%d refused meanwhile; measurement, not asserted)",
			leader.Name, time.Since(killed).Round(time.Millisecond), refused)
		rev := f.revision(live[0])
		waitFor(t, 30*time.Second, func() (bool, string) {
			for _, r := range live {
				if got := f.revision(r); got != rev {
					return false, fmt.Sprintf("%s serves %s, want %s: its watch did not resume", r.Name, got, rev)
				}
			}
			n, msg := f.nodeVia(live[len(live)-1])
			return n.synced(), msg
		})
		f.waitHTTP(t, "/routes/after-leader", http.StatusOK)
		if after := f.listeners(t); after != listenersBefore {
			t.Errorf("active listeners went from %d to %d", listenersBefore, after)
		}
		f.params = p
	})

	res := finishStreams()
	if res == nil {
		t.Fatal("the probe did not run")
	}
	t.Logf("%d streams, %d frames sent, %d received; rtt p50 %v p99 %v", len(res.Streams), res.Sent, res.Received, res.RTT.P50, res.RTT.P99)
	if res.FailedDials != 0 || res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.Corrupted != 0 {
		for i, st := range res.Streams {
			if st.Error != "" {
				t.Logf("stream %d: %s", i, st.Error)
			}
		}
		t.Fatalf("live calls were hurt: failed dials %d disconnects %d lost %d reordered %d corrupted %d",
			res.FailedDials, res.Disconnects, res.Lost, res.Reordered, res.Corrupted)
	}
	if modified, draining := stats(); modified != modifiedBefore || draining != drainingBefore {
		t.Errorf("listener_modified %d → %d, total_filter_chains_draining %d → %d: a listener changed", modifiedBefore, modified, drainingBefore, draining)
	}
}

func (f *haFleet) listeners(t *testing.T) int64 {
	n, err := f.envoy.Stat(context.Background(), "listener_manager.total_listeners_active")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sameResources asks every live replica for its LDS and CDS over xDS, as
// a new Envoy would, and checks that versions and bytes are identical.
func (f *haFleet) sameResources(t *testing.T) {
	t.Helper()
	var first []byte
	var firstName string
	for _, r := range f.survivors() {
		c, err := testkit.DialXDS(r.XDSAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := c.Sync(ctx, "bytes-check-"+r.Name, testkit.Subscription{
			"type.googleapis.com/envoy.config.listener.v3.Listener": nil,
			"type.googleapis.com/envoy.config.cluster.v3.Cluster":   nil,
		})
		cancel()
		if err != nil {
			t.Fatalf("xDS from %s: %v", r.Name, err)
		}
		var buf bytes.Buffer
		byType := map[string][]byte{}
		for _, resp := range s.Received {
			var rb bytes.Buffer
			fmt.Fprintf(&rb, "%s %s %d resources\n", resp.GetTypeUrl(), resp.GetVersionInfo(), len(resp.GetResources()))
			// The cache answers a wildcard request from a map, in any
			// order: compare the set of resources.
			var sums []string
			for _, a := range resp.GetResources() {
				sums = append(sums, fmt.Sprintf("%x", sha256.Sum256(a.GetValue())))
			}
			slices.Sort(sums)
			fmt.Fprintln(&rb, strings.Join(sums, "\n"))
			byType[resp.GetTypeUrl()] = rb.Bytes()
		}
		for _, k := range []string{"type.googleapis.com/envoy.config.cluster.v3.Cluster", "type.googleapis.com/envoy.config.listener.v3.Listener"} {
			buf.Write(byType[k])
		}
		s.Close()
		c.Close()
		if first == nil {
			first, firstName = buf.Bytes(), r.Name
			continue
		}
		if !bytes.Equal(first, buf.Bytes()) {
			t.Errorf("replicas %s and %s serve different listener or cluster bytes:\n%s\n%s", firstName, r.Name, first, buf.Bytes())
		}
	}
}

// fakeIDP serves a JWKS document and counts its fetches.
type fakeIDP struct {
	url     string
	mu      sync.Mutex
	fetches int
	keys    []string
}

func startFakeIDP(t *testing.T) *fakeIDP {
	idp := &fakeIDP{keys: []string{`{"kty":"oct","kid":"idp-1","alg":"HS256","k":"aWRwLWtleS1vbmUtZm9yLXRoZS1oYS10ZXN0cy0zMmI"}`}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		idp.mu.Lock()
		defer idp.mu.Unlock()
		idp.fetches++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"keys":[%s]}`, strings.Join(idp.keys, ","))
	}))
	t.Cleanup(srv.Close)
	idp.url = srv.URL + "/.well-known/jwks.json"
	return idp
}

func (i *fakeIDP) count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.fetches
}

func (i *fakeIDP) rotate() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = append(i.keys, `{"kty":"oct","kid":"idp-2","alg":"HS256","k":"aWRwLWtleS10d28tZm9yLXRoZS1oYS10ZXN0cy0zMmI"}`)
}

// observer is a store client that reads elections.
func (f *haFleet) observer(t *testing.T) *store.Etcd {
	eps, err := store.ParseURL("etcd://" + f.etcd.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.NewEtcd(store.EtcdConfig{Endpoints: eps, Replica: "observer"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*store.Etcd)
}

func (f *haFleet) byName(name string) *testkit.Replica {
	for _, r := range f.replicas {
		if r.Name == name {
			return r
		}
	}
	f.t.Fatalf("no replica %q", name)
	return nil
}

// jwksLeader waits for a live leader of the JWKS election other than not.
func (f *haFleet) jwksLeader(t *testing.T, observer *store.Etcd, not string) *testkit.Replica {
	var name string
	waitFor(t, 30*time.Second, func() (bool, string) {
		var err error
		name, err = observer.Leader(context.Background(), "jwks")
		// A killed replica leads until its lease expires.
		return err == nil && name != not && f.byName(name).Alive(), fmt.Sprintf("leader %q: %v", name, err)
	})
	return f.byName(name)
}

// ecds is Envoy's extension configs as it runs them, without their
// update times.
func (f *haFleet) ecds(t *testing.T) string {
	b, err := f.envoy.ConfigDump(context.Background(), "ecds_filters")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var strip func(any)
	strip = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "last_updated")
			for _, x := range v {
				strip(x)
			}
		case []any:
			for _, x := range v {
				strip(x)
			}
		}
	}
	strip(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

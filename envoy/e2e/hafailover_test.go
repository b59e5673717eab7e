//go:build !wasip1

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestHAFailoverFilter moves an Envoy of each filter build between two
// replicas that serve it its modules: the replica serving it is killed
// with SIGKILL, then restarted, and the other one killed so that the
// Envoy moves to the restarted one. Each move must change nothing Envoy
// can see: no NACK, no listener modified or drained, the handshake
// filter's config neither applied again nor refused, no critical log
// line, no live stream closed, and a handshake and a REST request every
// 100 ms throughout, none answered 5xx or refused.
//
// Both builds run over state-of-the-world xDS; the Wasm build runs over
// delta xDS too, where a reconnecting Envoy names what it holds and is
// sent nothing.
func TestHAFailoverFilter(t *testing.T) {
	for _, c := range []struct {
		name  string
		build testkit.FilterBuild
		delta bool
	}{
		{"wasm", testkit.FilterWasm, false},
		{"native", testkit.FilterNative, false},
		{"wasm-delta", testkit.FilterWasm, true},
	} {
		t.Run(c.name, func(t *testing.T) { testHAFailoverFilter(t, c.build, c.delta) })
	}
}

func testHAFailoverFilter(t *testing.T, build testkit.FilterBuild, delta bool) {
	f := startModuleFleet(t, build, delta)
	ctx := t.Context()
	tok := validToken(t)

	// Streams on the HTTP listener and on the tcp mode listener, whose
	// handshake filters are each a filter config by ECDS.
	st := startStreams(t, tok, 5, "ws://"+f.params.Listen+"/v1/voice", "ws://"+f.params.TCP+"/v1/voice")
	defer func() {
		if st != nil {
			st.end(t)
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := f.envoy.WaitStat(wctx, "cluster.voice.upstream_cx_active", func(v int64) bool { return v >= 10 }); err != nil {
		t.Fatal(err)
	}
	cancel()

	p := startPoller(f.params.Listen, f.params.TCP, tok)
	defer p.stop()

	// Each move: the replica serving the Envoy dies, the Envoy settles on
	// another; first on the survivor, then, once the dead one is back at
	// its addresses and the survivor is killed, on the restarted one.
	for _, move := range []string{"kill the serving replica", "restart it, kill the other"} {
		victim := f.servingReplica()
		if move != "kill the serving replica" {
			for i, r := range f.replicas {
				if !r.Alive() {
					f.replicas[i] = startModuleReplica(t, f, r.Name, r)
					if err := f.replicas[i].WaitReady(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		now, _ := f.nodeVia(victim)
		ecdsBefore := f.ecdsApplied(t)
		before := f.envoyView(t)
		if reloads := before.reloads(); reloads < 2 {
			t.Fatalf("Envoy counts the reloads of %d extension configs, want the HTTP and the tcp handshake filter's: %v", reloads, before.counters)
		}
		// A dynamic module may come from the host's cache, fetched by
		// another Envoy: the counter must exist, not be above zero.
		if _, ok := before.counters["cluster.directpipe_modules.upstream_rq_total"]; !ok {
			t.Fatalf("Envoy has no module cluster: %v", before.counters)
		}
		polled := p.snapshot()
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
		failover := time.Since(killed)
		// The poller's next round trips run on the settled Envoy too.
		p.waitRounds(t, 3)
		view := f.envoyView(t)
		during := p.snapshot().since(polled)
		t.Logf("%s: %s killed; node SYNCED on %s after %v; %s (measurement, not asserted)",
			move, victim.Name, after.Replica, failover.Round(time.Millisecond), during)
		t.Logf("%s: accepted and skipped, or lost with the dead replica's stream: %s", move, strings.Join(movedCounters(before.accepted, view.accepted), "; "))
		f.noNACK(t)
		if now.versions() != after.versions() {
			t.Errorf("%s: the new replica serves other versions than the dead one:\nbefore %s\nafter  %s", move, now.versions(), after.versions())
		}
		if ecds := f.ecdsApplied(t); ecds != ecdsBefore {
			t.Errorf("%s: Envoy applied its extension configs again:\nbefore %s\nafter  %s", move, ecdsBefore, ecds)
		}
		if d := before.diff(view); d != "" {
			t.Errorf("%s: the Envoy saw the move:\n%s", move, d)
		}
		if during.handshakeFailures != 0 || during.rest5xx != 0 || during.restErrors != 0 {
			t.Errorf("%s: the poller was refused: %s; first: %s", move, during, during.first)
		}
	}

	p.stop()
	st.end(t)
	st = nil
}

// startModuleFleet is two replicas on a one-member etcd, each serving the
// modules (and the dynamic module), and one Envoy of build (on delta xDS
// if delta) whose bootstrap lists both for xDS and for modules.
func startModuleFleet(t *testing.T, build testkit.FilterBuild, delta bool) *haFleet {
	t.Helper()
	f := &haFleet{t: t, etcd: testkit.StartEtcd(t, 1), backend: testkit.StartBackend(t), node: "e2e-ha-" + string(build)}
	f.params = policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: f.backend.VoiceAddr, REST: f.backend.RESTAddr,
		VoiceEndpoints: []string{f.backend.VoiceAddr}, Keys: []jwk{devKey()},
		TCP: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
	}
	var xdsAddrs, modAddrs []string
	for i := range 2 {
		r := startModuleReplica(t, f, fmt.Sprintf("cp%d", i+1), nil)
		f.replicas = append(f.replicas, r)
		xdsAddrs, modAddrs = append(xdsAddrs, r.XDSAddr), append(modAddrs, r.ModulesAddr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, r := range f.replicas {
		if err := r.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.envoy = testkit.StartEnvoy(t, testkit.EnvoyOptions{NodeID: f.node, XDSAddrs: xdsAddrs, ModulesAddrs: modAddrs, Filter: build, Delta: delta})
	f.waitHTTP(t, "/api/health", http.StatusOK)
	if err := testkit.WaitListening(f.params.TCP, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return f
}

// startModuleReplica starts replica name of fleet f, serving modules; a
// restart takes the killed replica's addresses.
func startModuleReplica(t *testing.T, f *haFleet, name string, restart *testkit.Replica) *testkit.Replica {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testkit.StartReplica(t, testkit.ReplicaOptions{
		Name: name, Store: "etcd://" + f.etcd.Endpoints(), SeedPolicy: policyFile(t, f.params), TokenFile: tokenFile,
		Modules: true, Native: testkit.NativeModule(t), Restart: restart,
	})
}

// ecdsApplied is Envoy's extension configs with the time each was last
// applied.
func (f *haFleet) ecdsApplied(t *testing.T) string {
	t.Helper()
	b, err := f.envoy.ConfigDump(t.Context(), "ecds_filters")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noNACK checks that no live replica records a NACK for the node.
func (f *haFleet) noNACK(t *testing.T) {
	t.Helper()
	for _, r := range f.survivors() {
		n, msg := f.nodeVia(r)
		for _, res := range n.Resources {
			if res.LastNACK != nil {
				t.Errorf("%s records a NACK of %s: %+v\n%s", r.Name, res.Type, *res.LastNACK, msg)
			}
		}
	}
}

// envoyView is what an Envoy shows of its configuration's history: the
// counters that move when it applies, refuses or drains a listener, a
// cluster, a route table or an extension config, and its critical log
// lines. Envoy counts every response it accepts (update_success), and
// every broken xDS stream (update_failure) for each resource it
// subscribes to; a response whose resources hash as those it runs is
// skipped without being applied. So those two are reported, not
// compared: what must not move is what Envoy applies (config_reload,
// listener and cluster changes) or refuses.
type envoyView struct {
	counters map[string]int64
	accepted map[string]int64
	critical []string
}

// changeCounters are the counters of an applied, refused or drained
// change, or of a module downloaded again.
var changeCounters = []string{
	"listener_manager.listener_modified", "listener_manager.listener_added", "listener_manager.listener_removed",
	"listener_manager.total_filter_chains_draining",
	"cluster_manager.cluster_modified", "cluster_manager.cluster_added", "cluster_manager.cluster_removed",
	// A module fetched again.
	"cluster.directpipe_modules.upstream_rq_total",
}

func (f *haFleet) envoyView(t *testing.T) envoyView {
	t.Helper()
	stats, err := f.envoy.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	v := envoyView{counters: map[string]int64{}, accepted: map[string]int64{}}
	for k, n := range stats {
		switch {
		case slices.Contains(changeCounters, k),
			strings.HasSuffix(k, ".config_reload"), strings.HasSuffix(k, ".config_fail"),
			strings.HasSuffix(k, ".config_conflict"), strings.HasSuffix(k, ".update_rejected"):
			v.counters[k] = n
		case strings.HasPrefix(k, "extension_config_discovery.") &&
			(strings.HasSuffix(k, ".update_success") || strings.HasSuffix(k, ".update_failure")):
			v.accepted[k] = n
		}
	}
	for line := range strings.Lines(f.envoy.Log()) {
		if strings.Contains(line, "[critical]") {
			v.critical = append(v.critical, line)
		}
	}
	return v
}

// reloads is how many extension configs the view counts the reloads of.
func (v envoyView) reloads() int {
	n := 0
	for k := range v.counters {
		if strings.HasPrefix(k, "extension_config_discovery.") && strings.HasSuffix(k, ".config_reload") {
			n++
		}
	}
	return n
}

// diff is what was applied, refused or drained from v to w, and the
// critical lines logged meanwhile; "" if nothing.
func (v envoyView) diff(w envoyView) string {
	out := movedCounters(v.counters, w.counters)
	for _, line := range w.critical[len(v.critical):] {
		out = append(out, "log: "+strings.TrimSpace(line))
	}
	return strings.Join(out, "\n")
}

func movedCounters(before, after map[string]int64) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if before[k] != after[k] {
			out = append(out, fmt.Sprintf("%s %d → %d", k, before[k], after[k]))
		}
	}
	return out
}

// poller opens a new authenticated WebSocket handshake on the HTTP
// listener and one on the tcp mode listener, and sends a REST request,
// every 100 ms, and counts what each got.
type poller struct {
	done   chan struct{}
	wg     sync.WaitGroup
	rounds atomic.Int64
	mu     sync.Mutex
	counts pollCounts
}

type pollCounts struct {
	handshakes, handshakeFailures int
	rest, rest5xx, restErrors     int
	first                         string
}

func (c pollCounts) since(before pollCounts) pollCounts {
	first := c.first
	if before.first != "" {
		first = ""
	}
	return pollCounts{
		handshakes: c.handshakes - before.handshakes, handshakeFailures: c.handshakeFailures - before.handshakeFailures,
		rest: c.rest - before.rest, rest5xx: c.rest5xx - before.rest5xx, restErrors: c.restErrors - before.restErrors,
		first: first,
	}
}

func (c pollCounts) String() string {
	return fmt.Sprintf("%d handshake pairs (%d refused or failed), %d REST requests (%d 5xx, %d errors)",
		c.handshakes, c.handshakeFailures, c.rest, c.rest5xx, c.restErrors)
}

func startPoller(httpAddr, tcpAddr, tok string) *poller {
	p := &poller{done: make(chan struct{})}
	p.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			herr := handshakeOnce(httpAddr, tok)
			if herr == nil {
				herr = handshakeOnce(tcpAddr, tok)
			}
			resp, rerr := client.Get("http://" + httpAddr + "/api/health")
			status := 0
			if rerr == nil {
				status = resp.StatusCode
				resp.Body.Close()
			}
			p.mu.Lock()
			p.counts.handshakes++
			p.counts.rest++
			if herr != nil {
				p.counts.handshakeFailures++
				p.noteFirst("handshake: " + herr.Error())
			}
			switch {
			case rerr != nil:
				p.counts.restErrors++
				p.noteFirst("REST: " + rerr.Error())
			case status >= 500:
				p.counts.rest5xx++
				p.noteFirst(fmt.Sprintf("REST: %d", status))
			}
			p.mu.Unlock()
			p.rounds.Add(1)
		}
	})
	return p
}

func (p *poller) noteFirst(s string) {
	if p.counts.first == "" {
		p.counts.first = s
	}
}

func (p *poller) snapshot() pollCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// waitRounds waits until the poller has finished n more rounds.
func (p *poller) waitRounds(t *testing.T, n int64) {
	t.Helper()
	want := p.rounds.Load() + n
	waitFor(t, 30*time.Second, func() (bool, string) {
		return p.rounds.Load() >= want, "the poller stopped polling"
	})
}

func (p *poller) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}

// handshakeOnce opens an authenticated WebSocket on addr and closes it:
// nil if Envoy switched protocols.
func handshakeOnce(addr, tok string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte(upgradeRequest("/v1/voice", "Authorization: Bearer "+tok))); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("upgrade answered %d", resp.StatusCode)
	}
	return nil
}

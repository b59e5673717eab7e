package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/bootstrap"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// startProbe is what a load balancer in front of a starting Envoy does:
// from the moment the process starts, every 100 ms, a REST request, an
// authenticated upgrade on the HTTP listener and one on the tcp mode
// listener, each on a new connection. A refused connection is fine (the
// port is not open yet); anything else a client can see that is not the
// answer it would get from a ready Envoy is recorded as a failure.
type startProbe struct {
	start time.Time
	mu    sync.Mutex
	// first is when each target first answered as a ready Envoy would.
	first    map[string]time.Duration
	ready    time.Duration // when /ready first said LIVE; 0 before
	failures []string
	answered map[string]int
	refused  int
	loops    int
}

// target is one request the probe sends.
type target struct {
	name   string
	url    string
	header http.Header
	want   int
}

func newStartProbe() *startProbe {
	return &startProbe{start: time.Now(), first: map[string]time.Duration{}, answered: map[string]int{}}
}

func (p *startProbe) since() time.Duration { return time.Since(p.start).Round(time.Millisecond) }

// send runs one request on its own connection and records what came back.
func (p *startProbe) send(tg target) {
	sent := p.since()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tg.url, nil)
	if err != nil {
		panic(err)
	}
	for k, v := range tg.header {
		req.Header[k] = v
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		// A 101's body is the upgraded connection: close it unread.
		if resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		}
		resp.Body.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			p.refused++
			return
		}
		p.failures = append(p.failures, fmt.Sprintf("%s sent at %v: %v", tg.name, sent, err))
		return
	}
	p.answered[tg.name]++
	if resp.StatusCode != tg.want {
		p.failures = append(p.failures, fmt.Sprintf("%s sent at %v (ready at %v): %d %s", tg.name, sent, p.ready, resp.StatusCode, strings.TrimSpace(string(body))))
		return
	}
	if _, ok := p.first[tg.name]; !ok {
		p.first[tg.name] = p.since()
	}
}

// run polls until every target has answered as wanted and Envoy is ready,
// then a second more, or until the deadline.
func (p *startProbe) run(t *testing.T, e *testkit.Envoy, targets []target, deadline time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var doneAt time.Duration
	for p.since() < deadline {
		for _, tg := range targets {
			wg.Add(1)
			go func() { defer wg.Done(); p.send(tg) }()
		}
		p.mu.Lock()
		p.loops++
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		live := e.WaitReady(ctx) == nil
		cancel()
		p.mu.Lock()
		if live && p.ready == 0 {
			p.ready = p.since()
		}
		all := p.ready != 0 && len(p.first) == len(targets)
		p.mu.Unlock()
		if all && doneAt == 0 {
			doneAt = p.since()
		}
		if doneAt != 0 && p.since() > doneAt+time.Second {
			break
		}
		<-tick.C
	}
	wg.Wait()
}

// TestReadyMeansReady starts an Envoy as a fleet member does (modules from
// the control plane by sha256, or from its disk) and sends traffic from
// the first moment: no request may get a 5xx or a reset because the
// handshake filter is not there yet, a normal start logs no critical line,
// and it leaves no NACK behind.
func TestReadyMeansReady(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remote bool
		delta  bool
	}{
		{"remote module sotw", true, false},
		{"remote module delta", true, true},
		{"module file sotw", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &stack{t: t, backend: testkit.StartBackend(t)}
			tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
			s.params = policyParams{
				Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: s.backend.VoiceAddr, REST: s.backend.RESTAddr,
				VoiceEndpoints: []string{s.backend.VoiceAddr}, Keys: []jwk{devKey()}, TCP: tcpAddr,
			}
			s.file = policyFile(t, s.params)
			opts := testkit.ControlPlaneOptions{PolicyFile: s.file, AdminToken: adminToken}
			if tc.remote {
				opts.Fleet = &testkit.Fleet{}
			}
			s.cp = testkit.StartControlPlane(t, opts)
			adminPort := testkit.FreePort(t)
			params := bootstrap.Params{NodeID: "edge-" + strings.ReplaceAll(tc.name, " ", "-"), Cluster: "e2e", AdminPort: adminPort,
				XDSAddrs: []string{s.cp.XDSAddr()}, Delta: tc.delta}
			if tc.remote {
				params.ModulesAddrs = []string{s.cp.ModulesAddr()}
			}
			cfg, err := bootstrap.Render(params)
			if err != nil {
				t.Fatal(err)
			}
			token := validToken(t)
			auth := http.Header{"Authorization": {"Bearer " + token}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
				"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
			targets := []target{
				{"REST", s.listenURL("http", "/api/health"), nil, http.StatusOK},
				{"upgrade", s.listenURL("http", "/v1/voice"), auth, http.StatusSwitchingProtocols},
				{"tcp mode upgrade", "http://" + tcpAddr + "/v1/voice", auth, http.StatusSwitchingProtocols},
			}
			probe := newStartProbe()
			s.envoy = testkit.LaunchEnvoy(t, cfg, adminPort, 2, 2*time.Second)
			probe.run(t, s.envoy, targets, 3*time.Minute)

			t.Logf("ready (LIVE) at %v; first good answer: %v; answers: %v; refused %d; polls %d", probe.ready, probe.first, probe.answered, probe.refused, probe.loops)
			for _, f := range probe.failures {
				t.Errorf("a client of the starting Envoy saw: %s", f)
			}
			if probe.ready == 0 || len(probe.first) != len(targets) {
				t.Fatalf("not serving within the deadline: ready at %v, first answers %v", probe.ready, probe.first)
			}
			for name, at := range probe.first {
				if at < probe.ready-time.Second {
					// Envoy's listeners only open when it is ready, give or
					// take the poll: an answer long before says the
					// readiness lags what Envoy serves, which costs
					// nothing, but is worth knowing.
					t.Logf("%s answered at %v, before /ready said LIVE at %v", name, at, probe.ready)
				}
			}
			waitSynced(t, s, time.Minute)
			for _, n := range s.cp.XDS().Status().Nodes() {
				for typ, ts := range n.Types {
					if ts.LastNack != nil {
						t.Errorf("node %s: a NACK of %s remains: %s", n.ID, typ, ts.LastNack.Error)
					}
				}
			}
			for _, line := range strings.Split(s.envoy.Log(), "\n") {
				if strings.Contains(line, "[critical]") {
					t.Errorf("Envoy logged at start: %s", line)
				}
			}
		})
	}
}

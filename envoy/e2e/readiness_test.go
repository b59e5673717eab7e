package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/directpipe/directpipe/envoy/bootstrap"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
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

// fleetMember is a stack whose Envoy runs as a fleet member does: its
// modules from the control plane by sha256 (remote) or from its disk,
// launched but not yet ready.
type fleetMember struct {
	*stack
	tcpAddr string
	wasm    string // the control plane's module file, for a rollout
	targets []target
}

func launchFleetMember(t *testing.T, name string, remote, delta bool) *fleetMember {
	t.Helper()
	return launchMember(t, name, memberOptions{remote: remote, delta: delta})
}

// memberOptions shape a fleet member: where its modules come from, its
// xDS flavour, and the build of the handshake filter it runs (native: the
// dynamic module, served from the file native).
type memberOptions struct {
	remote, delta bool
	native        string
	// modules, when set, is the module server address Envoy is given in
	// place of the control plane's own (which it is passed).
	modules func(real string) string
	// noTCP leaves the tcp mode route out, and its network filter.
	noTCP bool
}

func launchMember(t *testing.T, name string, o memberOptions) *fleetMember {
	t.Helper()
	remote, delta := o.remote, o.delta
	s := &stack{t: t, backend: testkit.StartBackend(t)}
	m := &fleetMember{stack: s, tcpAddr: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))}
	s.params = policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: s.backend.VoiceAddr, REST: s.backend.RESTAddr,
		VoiceEndpoints: []string{s.backend.VoiceAddr}, Keys: []jwk{devKey()}, TCP: m.tcpAddr,
	}
	if o.noTCP {
		s.params.TCP = ""
	}
	s.file = policyFile(t, s.params)
	m.wasm = filepath.Join(t.TempDir(), "handshake.wasm")
	copyFile(t, testkit.WasmModule(t), m.wasm)
	opts := testkit.ControlPlaneOptions{PolicyFile: s.file, AdminToken: adminToken, WasmPath: m.wasm, NativePath: o.native}
	if remote {
		opts.Fleet = &testkit.Fleet{}
	}
	s.cp = testkit.StartControlPlane(t, opts)
	adminPort := testkit.FreePort(t)
	params := bootstrap.Params{NodeID: name, Cluster: "e2e", AdminPort: adminPort, XDSAddrs: []string{s.cp.XDSAddr()}, Delta: delta}
	if o.native != "" {
		params.Filter = bootstrap.FilterNative
	}
	if remote {
		params.ModulesAddrs = []string{s.cp.ModulesAddr()}
		if o.modules != nil {
			params.ModulesAddrs = []string{o.modules(s.cp.ModulesAddr())}
		}
	}
	cfg, err := bootstrap.Render(params)
	if err != nil {
		t.Fatal(err)
	}
	auth := http.Header{"Authorization": {"Bearer " + validToken(t)}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
		"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	m.targets = []target{
		{"REST", s.listenURL("http", "/api/health"), nil, http.StatusOK},
		{"upgrade", s.listenURL("http", "/v1/voice"), auth, http.StatusSwitchingProtocols},
		{"tcp mode upgrade", "http://" + m.tcpAddr + "/v1/voice", auth, http.StatusSwitchingProtocols},
	}
	if o.noTCP {
		m.targets = m.targets[:2]
	}
	s.envoy = testkit.LaunchEnvoy(t, cfg, adminPort, 2, 2*time.Second)
	return m
}

// assertClean fails the test for every NACK the node left in the control
// plane's status and every critical line Envoy logged.
func (m *fleetMember) assertClean(t *testing.T) {
	t.Helper()
	for _, n := range m.cp.XDS().Status().Nodes() {
		for typ, ts := range n.Types {
			if ts.LastNack != nil {
				t.Errorf("node %s: a NACK of %s remains: %s", n.ID, typ, ts.LastNack.Error)
			}
		}
	}
	for _, line := range strings.Split(m.envoy.Log(), "\n") {
		if strings.Contains(line, "[critical]") {
			t.Errorf("Envoy logged: %s", line)
		}
	}
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
		native bool
	}{
		{"remote module sotw", true, false, false},
		{"remote module delta", true, true, false},
		{"module file sotw", false, false, false},
		// The HTTP listener runs the dynamic module, the tcp mode one the
		// Wasm module: both fetched by sha256.
		{"remote native module sotw", true, false, true},
		{"remote native module delta", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probe := newStartProbe()
			o := memberOptions{remote: tc.remote, delta: tc.delta}
			if tc.native {
				o.native = uniqueNativeModule(t)
			}
			m := launchMember(t, "edge-"+strings.ReplaceAll(tc.name, " ", "-"), o)
			probe.run(t, m.envoy, m.targets, 3*time.Minute)

			t.Logf("ready (LIVE) at %v; first good answer: %v; answers: %v; refused connections: %d",
				probe.ready, probe.first, probe.answered, probe.refused)
			for _, f := range probe.failures {
				t.Errorf("a client of the starting Envoy saw: %s", f)
			}
			if probe.ready == 0 || len(probe.first) != len(m.targets) {
				t.Fatalf("not serving within the deadline: ready at %v, first answers %v", probe.ready, probe.first)
			}
			waitSynced(t, m.stack, time.Minute)
			m.assertClean(t)
			if tc.native {
				dump, err := m.envoy.ConfigDump(context.Background(), "ecds_filters")
				if err != nil || !strings.Contains(string(dump), "DynamicModuleFilter") {
					t.Errorf("the handshake filter is not the dynamic module (%v):\n%s", err, dump)
				}
			}
		})
	}
}

// TestModuleRolloutUnderTraffic installs a new module while streams run
// and handshakes arrive every 100 ms on both paths: none of them fails,
// no open stream loses a frame, and the rollout leaves no NACK and no
// critical line behind. The filters move to the new module only once
// Envoy has loaded it.
func TestModuleRolloutUnderTraffic(t *testing.T) {
	m := launchFleetMember(t, "edge-rollout", true, false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := m.envoy.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, m.stack, time.Minute)
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, _ := voiceprobe.Run(ctx, voiceprobe.Config{
			URL: m.listenURL("ws", "/v1/voice"), Header: http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: 2, Frames: 100000, Interval: 20 * time.Millisecond, Stop: stop,
		})
		results <- res
	}()
	waitStreams(t, m.stack, 2)

	upgraded := withCustomSection(t, m.wasm)
	sum := sha256.Sum256(upgraded)
	sha := hex.EncodeToString(sum[:])
	if err := os.WriteFile(m.wasm, upgraded, 0o644); err != nil {
		t.Fatal(err)
	}
	probe := newStartProbe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, tg := range m.targets {
				probe.send(tg)
			}
		}
	}()
	m.cp.Refresh(ctx)
	// The filters name the new module once Envoy has it, and Envoy runs it.
	waitFor(t, 2*time.Minute, func() (bool, string) {
		ecds := fmt.Sprint(m.cp.Resources()[resource.ExtensionConfigType])
		return strings.Contains(ecds, sha) && synced(m.stack), "the filters do not run the new module yet"
	})
	time.Sleep(time.Second)
	close(stop)
	<-done
	if res := <-results; res.Disconnects != 0 || res.Lost != 0 || res.FailedDials != 0 {
		t.Errorf("open streams were hurt by the rollout: %+v", res.Streams)
	}
	t.Logf("handshakes during the rollout: %v", probe.answered)
	for _, f := range probe.failures {
		t.Errorf("a client during the rollout saw: %s", f)
	}
	if got := stat(t, m.envoy, moduleFetches); got != 2 {
		t.Errorf("Envoy fetched modules %d times, want 2 (one each)", got)
	}
	m.assertClean(t)
}

// TestNoControlPlaneAtStart starts an Envoy whose control plane is not
// there yet: it must not say it is ready, nor open a port, for longer than
// Envoy's own initial fetch timeout (15 s), and it must serve once the
// control plane comes up.
func TestNoControlPlaneAtStart(t *testing.T) {
	s := &stack{t: t, backend: testkit.StartBackend(t)}
	s.params = policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: s.backend.VoiceAddr, REST: s.backend.RESTAddr,
		VoiceEndpoints: []string{s.backend.VoiceAddr}, Keys: []jwk{devKey()},
	}
	s.file = policyFile(t, s.params)
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	adminPort := testkit.FreePort(t)
	cfg, err := bootstrap.Render(bootstrap.Params{NodeID: "edge-alone", Cluster: "e2e", AdminPort: adminPort, XDSAddrs: []string{xdsAddr}})
	if err != nil {
		t.Fatal(err)
	}
	s.envoy = testkit.LaunchEnvoy(t, cfg, adminPort, 2, 2*time.Second)
	// Envoy gives up waiting for its first resources after 15 s by
	// default and reports itself ready with nothing to serve.
	ctx, cancel := context.WithTimeout(context.Background(), 18*time.Second)
	defer cancel()
	if err := s.envoy.WaitReady(ctx); err == nil {
		t.Fatal("Envoy reported ready without a control plane")
	}
	if c, err := net.DialTimeout("tcp", s.params.Listen, time.Second); err == nil {
		c.Close()
		t.Fatal("Envoy opened a listener port without a control plane")
	}
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: s.file, XDSAddr: xdsAddr})
	probe := newStartProbe()
	auth := http.Header{"Authorization": {"Bearer " + validToken(t)}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
		"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	targets := []target{
		{"REST", s.listenURL("http", "/api/health"), nil, http.StatusOK},
		{"upgrade", s.listenURL("http", "/v1/voice"), auth, http.StatusSwitchingProtocols},
	}
	// Envoy retries the control plane with a back-off of up to 30 s.
	probe.run(t, s.envoy, targets, 2*time.Minute)
	t.Logf("after the control plane came up: ready at %v, first good answers %v", probe.ready, probe.first)
	for _, f := range probe.failures {
		t.Errorf("a client saw: %s", f)
	}
	if probe.ready == 0 || len(probe.first) != len(targets) {
		t.Fatalf("not serving after the control plane came up: ready at %v, first answers %v", probe.ready, probe.first)
	}
}

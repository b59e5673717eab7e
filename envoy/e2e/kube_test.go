//go:build !wasip1

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// kubeCluster is a loopback API server (etcd and kube-apiserver as local
// processes, from KUBEBUILDER_ASSETS) with directpipe's CRDs, and a
// kubeconfig for it.
type kubeCluster struct {
	t          *testing.T
	kubeconfig string
	kubectlBin string
	namespace  string
}

func startKubeCluster(t *testing.T) *kubeCluster {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: make k8s-tools builds the API server into .tools/k8s")
	}
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	gatewayCRDs, err := testkit.GatewayAPICRDs()
	if err != nil {
		t.Fatal(err)
	}
	// envtest logs through controller-runtime's logger, which otherwise
	// prints a stack trace to say it was never set.
	crlog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     append([]string{filepath.Join(root, "deploy/helm/directpipe/crds")}, gatewayCRDs...),
		ErrorIfCRDPathMissing: true,
	}
	if _, err := env.Start(); err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the API server: %v", err)
		}
	})
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "e2e-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	k := &kubeCluster{t: t, kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"), kubectlBin: filepath.Join(assets, "kubectl"), namespace: "voice"}
	if err := os.WriteFile(k.kubeconfig, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	k.kubectl(nil, "create", "namespace", k.namespace)
	return k
}

// kubectl runs the real kubectl binary; stdin, when not nil, is its input.
func (k *kubeCluster) kubectl(stdin []byte, args ...string) string {
	k.t.Helper()
	out, err := k.tryKubectl(stdin, args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (k *kubeCluster) tryKubectl(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(k.kubectlBin, append([]string{"--kubeconfig", k.kubeconfig, "-n", k.namespace}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// apply renders a manifest template and kubectl-applies it.
func (k *kubeCluster) apply(manifest string, data any) {
	k.t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("m").Parse(manifest)).Execute(&b, data); err != nil {
		k.t.Fatal(err)
	}
	k.kubectl(b.Bytes(), "apply", "-f", "-")
}

// kubeManifest is what an operator applies: a Service with its slices (on
// a real cluster the endpoint controller writes those), the back ends,
// the handshake policy and the routes.
const kubeManifest = `
apiVersion: v1
kind: Service
metadata: {name: agents}
spec:
  ports: [{name: ws, port: 80}]
---
apiVersion: directpipe.io/v1alpha1
kind: VoiceBackend
metadata: {name: agents}
spec:
  service: {name: agents, port: 80}
  lb: least_request
  maxConnections: 10000
---
apiVersion: directpipe.io/v1alpha1
kind: VoiceBackend
metadata: {name: rest}
spec:
  endpoints: ["{{.REST}}"]
---
apiVersion: directpipe.io/v1alpha1
kind: HandshakePolicy
metadata: {name: callers}
spec:
  sources: [{bearer: true}]
  jwt:
    keys: [{kty: oct, kid: dev, alg: HS256, k: "{{.Key}}"}]
    leeway: 30s
  identityHeader: x-directpipe-identity
---
apiVersion: directpipe.io/v1alpha1
kind: VoiceRoute
metadata: {name: voice}
spec:
  match: {path: /v1/voice}
  kind: websocket
  backendRef: {name: agents}
  handshakePolicyRef: {name: callers}
  idleTimeout: {{.Idle}}
---
apiVersion: directpipe.io/v1alpha1
kind: VoiceRoute
metadata: {name: api}
spec:
  match: {prefix: /api/}
  kind: http
  backendRef: {name: rest}
{{range .Extra}}---
apiVersion: directpipe.io/v1alpha1
kind: VoiceRoute
metadata: {name: {{.}}}
spec:
  match: {prefix: /routes/{{.}}}
  kind: http
  backendRef: {name: rest}
{{end}}`

// sliceManifest is one EndpointSlice of the agents Service: one loopback
// back end (its own port, so two slices give two endpoints).
const sliceManifest = `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: agents-{{.Name}}
  labels: {kubernetes.io/service-name: agents}
addressType: IPv4
ports: [{name: ws, port: {{.Port}}}]
endpoints:
  - addresses: ["{{.IP}}"]
    conditions: {ready: {{.Ready}}, serving: true, terminating: {{.Terminating}}}
`

// kubeData fills kubeManifest.
type kubeData struct {
	REST, Key, Idle string
	// Extra names more REST routes, each at /routes/<name>.
	Extra []string
}

func newKubeData(b *testkit.Backend) kubeData {
	return kubeData{REST: b.RESTAddr, Key: b64url(devSecret), Idle: "300s"}
}

type kubeSlice struct {
	Name, IP, Port     string
	Ready, Terminating bool
}

func newKubeSlice(t *testing.T, name, addr string) kubeSlice {
	ip, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return kubeSlice{Name: name, IP: ip, Port: port, Ready: true}
}

// TestKubernetesLoopback runs directpipe on the kubernetes store against a
// real API server and a real Envoy: resources applied with kubectl become
// routes; while streams run, a route is added, a Service's EndpointSlices
// change and an endpoint goes terminating; no frame is lost and no
// listener changes.
func TestKubernetesLoopback(t *testing.T) {
	k := startKubeCluster(t)
	host := podAddress(t)
	a, b := startBackendOn(t, host), startBackendOn(t, host)
	data := newKubeData(a)
	sliceA, sliceB := newKubeSlice(t, "a", a.VoiceAddr), newKubeSlice(t, "b", b.VoiceAddr)
	k.apply(kubeManifest, data)
	k.apply(sliceManifest, sliceA)

	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := testkit.StartReplica(t, testkit.ReplicaOptions{
		Name: "cp-kube", Store: "kubernetes", TokenFile: tokenFile,
		Args: []string{"-kubeconfig", k.kubeconfig, "-kube-namespace", k.namespace, "-kube-listen", listen},
	})
	ctx := t.Context()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cp.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	envoy := testkit.StartEnvoy(t, testkit.EnvoyOptions{NodeID: "e2e-kube", XDSAddrs: []string{cp.XDSAddr}})
	getStatus := func(path string) (int, string) {
		resp, err := http.Get("http://" + listen + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		return resp.StatusCode, ""
	}
	waitHTTP := func(path string, status int) {
		t.Helper()
		waitFor(t, 60*time.Second, func() (bool, string) {
			got, err := getStatus(path)
			return got == status, fmt.Sprintf("GET %s: %d %s, want %d", path, got, err, status)
		})
	}
	waitHTTP("/api/health", http.StatusOK)
	// The route's status says it is served.
	waitFor(t, 60*time.Second, func() (bool, string) {
		out, _ := k.tryKubectl(nil, "get", "voiceroute", "voice", "-o", `jsonpath={.status.conditions[?(@.type=="Programmed")].status}`)
		return out == "True", "Programmed: " + out
	})
	// The policy is the resources: a change applied through the admin API
	// is refused and says where changes go.
	if code, out, errs := runDpctl(cp, "policy", "get"); code != 0 || !strings.Contains(out, "/v1/voice") {
		t.Errorf("dpctl policy get: exit %d %s\n%s", code, errs, out)
	} else {
		p := filepath.Join(t.TempDir(), "p.yaml")
		changed := strings.Replace(out, "/api/", "/changed-api/", 1)
		if err := os.WriteFile(p, []byte(changed), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, out, errs := runDpctl(cp, "policy", "apply", "-f", p); code == 0 || !strings.Contains(out+errs, "kubectl apply") {
			t.Errorf("dpctl policy apply on the kubernetes store: exit %d, %s%s; want a refusal that points to kubectl", code, out, errs)
		}
	}

	stat := func(name string) int64 {
		v, err := envoy.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	modifiedBefore, drainingBefore := stat("listener_manager.listener_modified"), stat("listener_manager.total_filter_chains_draining")

	const streams = 20
	finish := runVoiceProbe(ctx, t, "ws://"+listen+"/v1/voice", streams)
	defer finish()
	if err := envoy.WaitStat(wctx, "http.public.downstream_cx_upgrades_active", func(v int64) bool { return v >= streams }); err != nil {
		t.Fatal(err)
	}
	hosts := func() string {
		resp, err := http.Get(envoy.AdminURL() + "/clusters")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var lines []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "agents::") && (strings.Contains(l, "::health_flags::") || strings.Contains(l, "::rq_total::")) {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}

	// 1. A route edit: a new route and a changed idle timeout, by kubectl.
	data.Extra, data.Idle = []string{"added"}, "600s"
	k.apply(kubeManifest, data)
	waitHTTP("/routes/added", http.StatusOK)

	// 2. The Service scales out: a second slice, a second endpoint.
	k.apply(sliceManifest, sliceB)
	waitFor(t, 60*time.Second, func() (bool, string) {
		h := hosts()
		return strings.Contains(h, b.VoiceAddr+"::health_flags::healthy"), h
	})

	// 3. The first endpoint's pod terminates but still serves: DRAINING,
	// its live streams go on.
	sliceA.Ready, sliceA.Terminating = false, true
	k.apply(sliceManifest, sliceA)
	waitFor(t, 60*time.Second, func() (bool, string) {
		h := hosts()
		return strings.Contains(h, a.VoiceAddr+"::health_flags::") && strings.Contains(h, "eds_status_draining"), h
	})
	// New streams go to the endpoint that is ready, none to the draining one.
	rqTotal := func(addr string) string {
		for _, l := range strings.Split(hosts(), "\n") {
			if v, ok := strings.CutPrefix(l, "agents::"+addr+"::rq_total::"); ok {
				return v
			}
		}
		return "0"
	}
	drainingRq, readyRq := rqTotal(a.VoiceAddr), rqTotal(b.VoiceAddr)
	res2, err := voiceprobe.Run(ctx, voiceprobe.Config{
		URL:     "ws://" + listen + "/v1/voice",
		Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
		Streams: 4, Frames: 5, Interval: 20 * time.Millisecond,
	})
	if err != nil || res2.Lost != 0 || res2.FailedDials != 0 {
		t.Fatalf("streams opened while an endpoint drains: %v %+v", err, res2)
	}
	if got := rqTotal(a.VoiceAddr); got != drainingRq {
		t.Errorf("the draining endpoint took new streams: rq_total %s → %s", drainingRq, got)
	}
	if got := rqTotal(b.VoiceAddr); got == readyRq {
		t.Errorf("the ready endpoint took no new stream: rq_total %s → %s\n%s", readyRq, got, hosts())
	}

	res := finish()
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
	if m, d := stat("listener_manager.listener_modified"), stat("listener_manager.total_filter_chains_draining"); m != modifiedBefore || d != drainingBefore {
		t.Errorf("listener_modified %d → %d, total_filter_chains_draining %d → %d: a listener changed", modifiedBefore, m, drainingBefore, d)
	}
}

// podAddress is an address of this host that an EndpointSlice may name:
// the API server refuses loopback endpoints, so the back ends these slices
// list are the one thing in this test that listens on a non-loopback
// address (the host's own, for the test's duration).
func podAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address on this host: the API server refuses loopback endpoints in an EndpointSlice")
	return ""
}

// startBackendOn runs the example back end with its voice port on host
// (its REST port stays on loopback).
func startBackendOn(t *testing.T, host string) *testkit.Backend {
	t.Helper()
	return startBackendAt(t, host, "127.0.0.1")
}

// startBackendAt starts a voice back end with its WebSocket and REST
// ports on the hosts given.
func startBackendAt(t *testing.T, voiceHost, restHost string) *testkit.Backend {
	t.Helper()
	b := &testkit.Backend{
		VoiceAddr: net.JoinHostPort(voiceHost, strconv.Itoa(testkit.FreePort(t))),
		RESTAddr:  net.JoinHostPort(restHost, strconv.Itoa(testkit.FreePort(t))),
	}
	cmd := exec.Command(testkit.Binary(t, "voice-backend"), "-addr", b.VoiceAddr, "-rest-addr", b.RESTAddr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for _, addr := range []string{b.VoiceAddr, b.RESTAddr} {
		if err := testkit.WaitListening(addr, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// runDpctl runs dpctl against a replica.
func runDpctl(r *testkit.Replica, args ...string) (int, string, string) {
	f := &haFleet{}
	return f.dpctl(r, args...)
}

// TestKubernetesStatusLeaderKilled runs two replicas on one namespace,
// kills the one that writes status with SIGKILL (its Lease is left to
// expire), and changes a route: the other replica takes the Lease and
// writes the route's status for the new generation.
func TestKubernetesStatusLeaderKilled(t *testing.T) {
	k := startKubeCluster(t)
	a := startBackendOn(t, podAddress(t))
	data := newKubeData(a)
	k.apply(kubeManifest, data)
	k.apply(sliceManifest, newKubeSlice(t, "a", a.VoiceAddr))
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	replicas := map[string]*testkit.Replica{}
	for _, name := range []string{"cp-a", "cp-b"} {
		replicas[name] = testkit.StartReplica(t, testkit.ReplicaOptions{
			Name: name, Store: "kubernetes", TokenFile: tokenFile,
			Args: []string{"-kubeconfig", k.kubeconfig, "-kube-namespace", k.namespace, "-kube-listen", fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))},
		})
	}
	// programmed reports whether the route's Programmed condition is True
	// for its current generation.
	programmed := func() (bool, string) {
		out, _ := k.tryKubectl(nil, "get", "voiceroute", "voice", "-o",
			`jsonpath={.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type=="Programmed")].status} {.status.conditions[?(@.type=="Programmed")].observedGeneration}`)
		f := strings.Fields(out)
		return len(f) == 4 && f[0] == f[1] && f[2] == "True" && f[3] == f[0], "generation, observed, Programmed, its generation: " + out
	}
	holder := func() string {
		out, _ := k.tryKubectl(nil, "get", "lease", "directpipe-status", "-o", "jsonpath={.spec.holderIdentity}")
		return out
	}
	waitFor(t, 60*time.Second, programmed)
	leader := holder()
	victim, ok := replicas[leader]
	if !ok {
		t.Fatalf("status lease held by %q, not by a replica", leader)
	}
	victim.Kill()
	killed := time.Now()
	data.Idle = "600s"
	k.apply(kubeManifest, data)
	waitFor(t, 90*time.Second, func() (bool, string) {
		ok, why := programmed()
		return ok && holder() != leader, why + "; lease holder " + holder()
	})
	t.Logf("status leader %s killed; %s wrote the new generation's status after %v (lease 15 s; measurement, not asserted)",
		leader, holder(), time.Since(killed).Round(time.Millisecond))
}

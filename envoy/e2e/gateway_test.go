//go:build !wasip1

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// gatewayManifest is what an operator applies with the Gateway API: a
// class of directpipe's, a Gateway with one HTTP listener, a WebSocket
// Service (appProtocol kubernetes.io/ws) and a REST one with their slices,
// an HTTPRoute to each, and a handshake policy attached to the Gateway.
const gatewayManifest = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: directpipe}
spec: {controllerName: directpipe.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: directpipe
  listeners: [{name: http, port: {{.Port}}, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: agents}
spec:
  ports: [{name: ws, port: 80, appProtocol: kubernetes.io/ws}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: agents-1
  labels: {kubernetes.io/service-name: agents}
addressType: IPv4
ports: [{name: ws, port: {{.VoicePort}}}]
endpoints: [{addresses: ["{{.IP}}"], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: rest}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: rest-1
  labels: {kubernetes.io/service-name: rest}
addressType: IPv4
ports: [{name: http, port: {{.RESTPort}}}]
endpoints: [{addresses: ["{{.IP}}"], conditions: {ready: true}}]
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
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: Exact, value: /v1/voice}}]
      backendRefs: [{name: agents, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /api/}}]
      backendRefs: [{name: rest, port: 8080}]
{{if .Added}}    - matches: [{path: {type: PathPrefix, value: /added/}}]
      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /api/}}}]
      backendRefs: [{name: rest, port: 8080}]
{{end}}`

type gatewayData struct {
	Port                    int
	IP, VoicePort, RESTPort string
	Key                     string
	Added                   bool
}

// TestGatewayAPILoopback serves a Gateway and an HTTPRoute applied with
// kubectl through a real Envoy: the WebSocket rule takes the direct path
// behind the handshake policy attached to the Gateway, the other rule the
// REST chain; the leader writes the Gateway API status; a rule added while
// streams run reaches Envoy without touching a listener or a stream.
func TestGatewayAPILoopback(t *testing.T) {
	k := startKubeCluster(t)
	host := podAddress(t)
	be := startBackendAt(t, host, host)
	_, voicePort, _ := net.SplitHostPort(be.VoiceAddr)
	_, restPort, _ := net.SplitHostPort(be.RESTAddr)
	data := gatewayData{Port: testkit.FreePort(t), IP: host, VoicePort: voicePort, RESTPort: restPort, Key: b64url(devSecret)}
	k.apply(gatewayManifest, data)

	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := testkit.StartReplica(t, testkit.ReplicaOptions{
		Name: "cp-gateway", Store: "kubernetes", TokenFile: tokenFile,
		Args: []string{"-kubeconfig", k.kubeconfig, "-kube-namespace", k.namespace,
			"-kube-listen", fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), "-gateway-host", "127.0.0.1"},
	})
	ctx := t.Context()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cp.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	envoy := testkit.StartEnvoy(t, testkit.EnvoyOptions{NodeID: "e2e-gateway", XDSAddrs: []string{cp.XDSAddr}})
	gateway := fmt.Sprintf("127.0.0.1:%d", data.Port)
	waitHTTP := func(path string, status int) {
		t.Helper()
		waitFor(t, 60*time.Second, func() (bool, string) {
			resp, err := http.Get("http://" + gateway + path)
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == status, fmt.Sprintf("GET %s: %d, want %d", path, resp.StatusCode, status)
		})
	}
	waitHTTP("/api/health", http.StatusOK)

	// Status, as the spec asks, written by the leader.
	jsonpath := func(kind, name, path string) string {
		out, _ := k.tryKubectl(nil, "get", kind, name, "-o", "jsonpath="+path)
		return out
	}
	for _, c := range []struct{ kind, name, path, want string }{
		{"gatewayclass", "directpipe", `{.status.conditions[?(@.type=="Accepted")].status}`, "True"},
		{"gateway", "edge", `{.status.conditions[?(@.type=="Programmed")].reason}`, "Programmed"},
		{"gateway", "edge", `{.status.listeners[0].attachedRoutes}`, "1"},
		{"httproute", "app", `{.status.parents[0].conditions[?(@.type=="Accepted")].status}`, "True"},
		{"httproute", "app", `{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}`, "True"},
	} {
		waitFor(t, 60*time.Second, func() (bool, string) {
			got := jsonpath(c.kind, c.name, c.path)
			return got == c.want, fmt.Sprintf("%s %s %s: %q, want %q", c.kind, c.name, c.path, got, c.want)
		})
	}

	// The handshake policy attached to the Gateway guards the WebSocket
	// rule: no token, no stream, and the back end sees none.
	_, resp, err := websocket.Dial(ctx, "ws://"+gateway+"/v1/voice", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("a stream without a token: %v, status %d; want 401", err, code)
	}
	if got := backendHandshakes(t, be.VoiceAddr); len(got) != 0 {
		t.Fatalf("a refused handshake reached the back end: %+v", got)
	}

	stat := func(name string) int64 {
		v, err := envoy.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	modifiedBefore := stat("listener_manager.listener_modified")
	const streams = 10
	finish := runVoiceProbe(ctx, t, "ws://"+gateway+"/v1/voice", streams)
	defer finish()
	upgrades := "http.gw-edge-" + fmt.Sprint(data.Port) + ".downstream_cx_upgrades_active"
	if err := envoy.WaitStat(wctx, upgrades, func(v int64) bool { return v >= streams }); err != nil {
		t.Fatal(err)
	}
	// A rule added to the HTTPRoute while the streams run: RDS only.
	data.Added = true
	k.apply(gatewayManifest, data)
	waitHTTP("/added/health", http.StatusOK)

	res := finish()
	if res == nil {
		t.Fatal("the probe did not run")
	}
	t.Logf("%d streams through the Gateway, %d frames sent, %d received; rtt p50 %v p99 %v", len(res.Streams), res.Sent, res.Received, res.RTT.P50, res.RTT.P99)
	if res.FailedDials != 0 || res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.Corrupted != 0 || res.Received == 0 {
		for i, st := range res.Streams {
			if st.Error != "" {
				t.Logf("stream %d: %s", i, st.Error)
			}
		}
		t.Fatalf("streams through the Gateway were hurt: failed dials %d disconnects %d lost %d reordered %d corrupted %d received %d",
			res.FailedDials, res.Disconnects, res.Lost, res.Reordered, res.Corrupted, res.Received)
	}
	if m := stat("listener_manager.listener_modified"); m != modifiedBefore {
		t.Errorf("listener_modified %d → %d: an HTTPRoute edit changed a listener", modifiedBefore, m)
	}
	// What the back end received: the verified identity, never the token.
	hs := backendHandshakes(t, be.VoiceAddr)
	if len(hs) == 0 {
		t.Fatal("the back end saw no handshake")
	}
	for _, h := range hs {
		if len(h.Headers["authorization"]) != 0 || len(h.Headers["x-directpipe-identity"]) != 1 {
			t.Errorf("handshake at the back end: authorization %q identity %q; want the identity alone", h.Headers["authorization"], h.Headers["x-directpipe-identity"])
		}
	}
	if got := jsonpath("gateway", "edge", `{.status.listeners[0].attachedRoutes}`); got != "1" {
		t.Errorf("attachedRoutes %q after the edit", got)
	}
}

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/directpipe/directpipe/controlplane/app"
	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// fleetCP starts a control plane for remote Envoys, with mutual TLS when
// certDir is set, on the test policy.
func fleetCP(t *testing.T, certDir string, limits *xds.Limits) *testkit.ControlPlane {
	t.Helper()
	b := testkit.StartBackend(t)
	p := policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: b.VoiceAddr, REST: b.RESTAddr,
		VoiceEndpoints: []string{b.VoiceAddr}, Keys: []jwk{devKey()},
	}
	return testkit.StartControlPlane(t, testkit.ControlPlaneOptions{
		PolicyFile: policyFile(t, p), AdminToken: adminToken, Fleet: &testkit.Fleet{CertDir: certDir, Limits: limits},
	})
}

// policyFile writes the test policy with params p.
func policyFile(t *testing.T, p policyParams) string {
	t.Helper()
	var buf bytes.Buffer
	renderPolicy(t, p, &buf)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// everything subscribes to every resource the control plane serves, as
// an Envoy with this policy would.
func everything(cp *testkit.ControlPlane) testkit.Subscription {
	return testkit.SubscribeAll(cp.Resources())
}

// clientTLS is a node's side of mutual TLS: its certificate, if any, and
// the CA that signed the control plane's.
func clientTLS(t *testing.T, dir, node string) *tls.Config {
	t.Helper()
	f := certs.Files{Dir: dir}
	ca, _ := f.CA()
	cert, key := "", ""
	if node != "" {
		cert, key = f.Node(node)
	}
	cfg, err := mtls.ClientConfig(cert, key, ca, certs.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestXDSRefusesUnauthenticatedClients: a client without a certificate,
// with one from another CA, or with one for another node id gets no
// resource at all; the right node gets everything.
func TestXDSRefusesUnauthenticatedClients(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}, Nodes: []string{"edge-1", "edge-2"}}); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: other, Nodes: []string{"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	cp := fleetCP(t, dir, nil)
	subs := everything(cp)

	foreign := clientTLS(t, dir, "")
	foreignPair, err := tls.LoadX509KeyPair(certs.Files{Dir: other}.Node("edge-1"))
	if err != nil {
		t.Fatal(err)
	}
	foreign.Certificates = []tls.Certificate{foreignPair}

	for _, tc := range []struct {
		name string
		tls  *tls.Config
		node string
		// codes: a TLS refusal surfaces as UNAVAILABLE before any stream.
		want []codes.Code
		says string
	}{
		{"no certificate", clientTLS(t, dir, ""), "edge-1", []codes.Code{codes.Unavailable, codes.Unauthenticated}, ""},
		{"another CA", foreign, "edge-1", []codes.Code{codes.Unavailable, codes.Unauthenticated}, ""},
		{"another node's certificate", clientTLS(t, dir, "edge-2"), "edge-1", []codes.Code{codes.PermissionDenied}, `node id "edge-1" does not match the client certificate, which is for node "edge-2"`},
		{"plaintext", nil, "edge-1", []codes.Code{codes.Unavailable}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := testkit.DialXDS(cp.XDSAddr(), tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := c.Sync(ctx, tc.node, subs)
			if len(s.Received) != 0 {
				t.Fatalf("the client received %s", s)
			}
			code := status.Code(err)
			if !slices.Contains(tc.want, code) {
				t.Fatalf("got %v (%v), want one of %v", code, err, tc.want)
			}
			if tc.says != "" && !strings.Contains(status.Convert(err).Message(), tc.says) {
				t.Errorf("error %q does not say %q", status.Convert(err).Message(), tc.says)
			}
		})
	}
	for _, n := range cp.XDS().Status().Nodes() {
		t.Errorf("a refused client is in node status: %q", n.ID)
	}

	// The node its certificate names gets every type, its secrets included.
	c, err := testkit.DialXDS(cp.XDSAddr(), clientTLS(t, dir, "edge-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Sync(ctx, "edge-1", subs)
	if err != nil || len(s.Received) != len(subs) {
		t.Fatalf("edge-1: %v, %s", err, s)
	}
	defer s.Close()
}

// TestTwoHundredClientsAllServedWithinTheRate connects 200 simulated nodes
// over mutual TLS at once. New streams over the rate are refused and come
// back after a back-off; every node ends SYNCED.
func TestTwoHundredClientsAllServedWithinTheRate(t *testing.T) {
	const nodes = 200
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.LoadAuthority(certs.Files{Dir: dir}.CA())
	if err != nil {
		t.Fatal(err)
	}
	limits := xds.DefaultLimits
	cp := fleetCP(t, dir, &limits)
	subs := everything(cp)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	var mu sync.Mutex
	totalRefused := 0
	for i := range nodes {
		node := fmt.Sprintf("sim-%03d", i)
		req, err := certs.NodeRequest("", node, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{RootCAs: pool, ServerName: certs.ServerName, Certificates: []tls.Certificate{pair}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := testkit.DialXDS(cp.XDSAddr(), cfg)
			if err != nil {
				errs <- err
				return
			}
			s, refused, err := c.SyncWithBackoff(ctx, node, subs)
			mu.Lock()
			totalRefused += refused
			mu.Unlock()
			if err != nil {
				errs <- fmt.Errorf("%s: %w", node, err)
				return
			}
			// Hold the stream until the test ends, as Envoy would.
			context.AfterFunc(ctx, func() { s.Close(); c.Close() })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	latest := cp.XDS().Versions()
	waitFor(t, time.Minute, func() (bool, string) {
		synced := 0
		for _, n := range cp.XDS().Status().Nodes() {
			all := true
			for typ, v := range latest {
				all = all && n.State(typ, v) == xds.Synced
			}
			if all && n.Connected {
				synced++
			}
		}
		return synced == nodes, fmt.Sprintf("%d of %d nodes SYNCED", synced, nodes)
	})
	elapsed := time.Since(start)
	rate := cp.Guard().Refused("rate")
	t.Logf("%d nodes SYNCED over mutual TLS in %v; %d streams refused over the rate (%.0f/s, burst %d) and retried",
		nodes, elapsed.Round(time.Millisecond), totalRefused, limits.StreamsPerSecond, limits.StreamBurst)
	if rate == 0 || int(rate) != totalRefused {
		t.Errorf("the server refused %v streams over its rate, the clients saw %d", rate, totalRefused)
	}
}

// TestNodeStatusStaysBounded: node ids too long are refused, more nodes
// than the limit are refused, and thousands of ids coming and going leave
// a bounded record.
func TestNodeStatusStaysBounded(t *testing.T) {
	limits := xds.DefaultLimits
	limits.MaxNodes = 50
	limits.StreamsPerSecond, limits.StreamBurst = 100_000, 100_000
	cp := fleetCP(t, "", &limits)
	subs := everything(cp)
	c, err := testkit.DialXDS(cp.XDSAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, size := range []int{limits.MaxNodeIDBytes + 1, 100 << 10, 1 << 20} {
		s, err := c.Sync(ctx, strings.Repeat("n", size), subs)
		if len(s.Received) != 0 {
			t.Fatalf("a %d-byte node id received %s", size, s)
		}
		if code := status.Code(err); code != codes.InvalidArgument && code != codes.ResourceExhausted {
			t.Fatalf("a %d-byte node id: %v", size, err)
		}
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Hold MaxNodes streams (one connection each: a connection carries at
	// most MaxStreamsPerConn); one more node is refused.
	var held []*testkit.Session
	for i := range limits.MaxNodes {
		hc, err := testkit.DialXDS(cp.XDSAddr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer hc.Close()
		s, err := hc.Sync(ctx, fmt.Sprintf("held-%d", i), subs)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	if s, err := c.Sync(ctx, "one-too-many", subs); status.Code(err) != codes.ResourceExhausted || len(s.Received) != 0 {
		t.Fatalf("node over the limit: %v, %s", err, s)
	}
	for _, s := range held {
		s.Close()
	}
	// The server releases a node when its stream's handler returns, a
	// moment after the client closes; churn starts once all are released.
	waitFor(t, 30*time.Second, func() (bool, string) {
		n := cp.Guard().Nodes()
		return n == 0, fmt.Sprintf("%d nodes still held after their streams closed", n)
	})
	// Thousands of ids, each connecting once.
	const churn = 3000
	for i := range churn {
		s, err := c.Sync(ctx, fmt.Sprintf("churn-%04d-%s", i, strings.Repeat("x", 200)), subs)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		n := len(cp.XDS().Status().Nodes())
		return n <= 256+limits.MaxNodes, fmt.Sprintf("%d nodes remembered after %d came and went", n, churn+limits.MaxNodes)
	})
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("%d node ids came and went: %d remembered, heap %+d KiB", churn+limits.MaxNodes,
		len(cp.XDS().Status().Nodes()), (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10)
}

// TestPlaintextXDSOnlyOnLoopback: a control plane asked to serve xDS in
// plaintext on another address does not start.
func TestPlaintextXDSOnlyOnLoopback(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	host := ""
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
			host = ip.IP.String()
			break
		}
	}
	if host == "" {
		host = "0.0.0.0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = app.New(ctx, app.Config{PolicyFile: policyFile(t, policyParams{Listen: "127.0.0.1:1", Voice: "127.0.0.1:2", REST: "127.0.0.1:3",
		VoiceEndpoints: []string{"127.0.0.1:2"}, Keys: []jwk{devKey()}}), XDSAddr: host + ":0", WasmPath: "/x.wasm"})
	if err == nil || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("plaintext xDS on %s: %v", host, err)
	}
}

func waitFor(t *testing.T, timeout time.Duration, check func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, last = check(); ok {
			return
		}
	}
	t.Fatal(last)
}

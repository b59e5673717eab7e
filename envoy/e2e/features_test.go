package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// TestPolicyFeaturesInEnvoy serves a policy that uses the whole schema to a
// real Envoy: Envoy must accept every resource (nothing NACKed), and each
// feature must do what it says.
func TestPolicyFeaturesInEnvoy(t *testing.T) {
	backend := testkit.StartBackend(t)
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	plain := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	secure := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	raw := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	policyText := fmt.Sprintf(`
listeners:
  - { name: public, address: "%[1]s", http2: true }
  - { name: secure, address: "%[2]s", http2: true, tls: { cert_file: "%[4]s", key_file: "%[5]s" } }
routes:
  - { name: voice, listener: public, match: { path: /v1/voice }, kind: websocket, backend: voice, max_stream_duration: 3600s }
  - { name: limited, listener: public, match: { path: /v1/limited }, kind: websocket, backend: voice, max_connections: 2 }
  - { name: voice-tls, listener: secure, match: { path: /v1/voice }, kind: websocket, backend: voice }
  - name: api-limited
    listener: public
    match: { path: /api/health, headers: [{ name: x-client, present: true }] }
    kind: http
    backend: rest
    rate_limit: { requests_per_unit: 2, unit: minute }
  - name: api
    listener: public
    match: { prefix: /api/, hosts: [api.example.com] }
    kind: http
    backend: rest
    cors: { allow_origins: ["https://app.example.com"], allow_methods: [GET], max_age: 60s }
  - { name: voice-raw, kind: websocket, mode: tcp, tcp: { address: "%[3]s" }, backend: voice }
backends:
  - name: voice
    endpoints: ["%[6]s"]
    lb: least_request
    health_check: { interval: 1s }
    circuit_breakers: { max_connections: 1000 }
    outlier_detection: { consecutive_5xx: 5 }
  - { name: rest, endpoints: ["%[7]s"], lb: ring_hash, hash_header: x-session }
`, plain, secure, raw, cert, key, backend.VoiceAddr, backend.RESTAddr)
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(policyText), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, backend: backend, file: file, params: policyParams{Listen: plain}}
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: file, AdminToken: adminToken})
	s.envoy = testkit.StartEnvoy(t, testkit.EnvoyOptions{XDSAddr: s.cp.XDSAddr()})
	s.waitStatus("SYNCED", "")

	t.Run("tcp mode carries a WebSocket through tcp_proxy", func(t *testing.T) {
		res, err := voiceprobe.Run(context.Background(), voiceprobe.Config{URL: "ws://" + raw + "/v1/voice", Streams: 2, Frames: 200})
		if err != nil || res.Received != 400 || res.Reordered != 0 {
			t.Fatalf("%v %+v", err, res)
		}
		if n, _ := s.envoy.Stat(context.Background(), "tcp.voice-raw.downstream_cx_total"); n < 2 {
			t.Errorf("tcp_proxy saw %d connections, want the probe's 2", n)
		}
	})

	t.Run("TLS listener", func(t *testing.T) {
		pool := x509.NewCertPool()
		pemBytes, _ := os.ReadFile(cert)
		pool.AppendCertsFromPEM(pemBytes)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "wss://"+secure+"/v1/voice", &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		if err := conn.Write(ctx, websocket.MessageBinary, []byte("over tls")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := conn.Read(ctx); err != nil || string(msg) != "over tls" {
			t.Fatalf("echo over TLS: %q %v", msg, err)
		}
	})

	t.Run("per-route connection limit", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var open []*websocket.Conn
		defer func() {
			for _, c := range open {
				c.CloseNow()
			}
		}()
		for range 2 {
			c, _, err := websocket.Dial(ctx, "ws://"+plain+"/v1/limited", nil)
			if err != nil {
				t.Fatalf("within the limit: %v", err)
			}
			open = append(open, c)
		}
		_, resp, err := websocket.Dial(ctx, "ws://"+plain+"/v1/limited", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("third call on a route limited to 2: %v %v, want 503", err, resp)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		var codes []int
		for range 4 {
			req, _ := http.NewRequest(http.MethodGet, "http://"+plain+"/api/health", nil)
			req.Header.Set("x-client", "a")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			codes = append(codes, resp.StatusCode)
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("x-directpipe-ratelimited") != "true" {
				t.Error("a limited response lacks x-directpipe-ratelimited")
			}
		}
		if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 || codes[3] != 429 {
			t.Errorf("codes %v, want 200 200 429 429", codes)
		}
	})

	t.Run("CORS and hosts", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodOptions, "http://"+plain+"/api/health", nil)
		req.Host = "api.example.com"
		req.Header.Set("Origin", "https://app.example.com")
		req.Header.Set("Access-Control-Request-Method", "GET")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example.com" {
			t.Errorf("preflight allow-origin %q (status %d)", got, resp.StatusCode)
		}
		req, _ = http.NewRequest(http.MethodGet, "http://"+plain+"/api/health", nil)
		req.Host = "other.example.com"
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("a host the route does not serve: %d, want 404", resp.StatusCode)
		}
	})
}

// selfSigned writes a certificate and key for localhost and 127.0.0.1.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

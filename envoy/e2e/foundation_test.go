package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

func TestVoiceStreamEchoesThroughEnvoy(t *testing.T) {
	s := newStack(t, false)
	res, err := voiceprobe.Run(context.Background(), voiceprobe.Config{
		URL:     s.listenURL("ws", "/v1/voice"),
		Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
		Streams: 1, Frames: 1000, Interval: 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Received != 1000 || res.Reordered != 0 || res.Lost != 0 || res.Corrupted != 0 || res.Disconnects != 0 {
		t.Fatalf("1,000 frames: received %d reordered %d lost %d corrupted %d disconnects %d (%v)",
			res.Received, res.Reordered, res.Lost, res.Corrupted, res.Disconnects, res.Streams[0].Error)
	}
}

func TestHandshakeDenials(t *testing.T) {
	s := newStack(t, false)
	now := time.Now()
	expired := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "x", "exp": now.Add(-time.Hour).Unix()})
	badSig := mint(t, []byte("not-the-development-secret-at-all"), "dev", jwt.MapClaims{"sub": "x", "exp": now.Add(time.Hour).Unix()})
	tests := []struct {
		name   string
		header http.Header
		query  string
		reason string
	}{
		{"no token", nil, "", "missing_token"},
		{"bad signature", http.Header{"Authorization": {"Bearer " + badSig}}, "", "bad_signature"},
		{"expired", http.Header{"Authorization": {"Bearer " + expired}}, "", "expired_token"},
		{"garbage", http.Header{"Authorization": {"Bearer %%%garbage%%%"}}, "", "unknown_api_key"},
		{"garbage jwt", nil, "?access_token=a.b.c", "malformed_token"},
		{"oversized", http.Header{"Authorization": {"Bearer " + strings.Repeat("x", 9000)}}, "", "token_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := upgrade(t, s.listenURL("http", "/v1/voice"+tt.query), tt.header)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401 (body %q)", resp.StatusCode, body)
			}
			if resp.Header.Get("Upgrade") != "" {
				t.Error("a denied handshake was upgraded")
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			var reason struct{ Error string }
			if err := json.Unmarshal([]byte(body), &reason); err != nil || reason.Error != tt.reason {
				t.Errorf("body %q, want reason %s", body, tt.reason)
			}
			for _, h := range tt.header["Authorization"] {
				if len(h) > 20 && strings.Contains(body, h[7:27]) {
					t.Error("the response echoes the token")
				}
			}
		})
	}
	// Frames cannot reach the back end around the check: a non-upgrade
	// request on the WebSocket path is refused by route, not forwarded.
	resp, err := http.Get(s.listenURL("http", "/v1/voice"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET on the voice path: %d, want 426", resp.StatusCode)
	}
	if got := len(s.handshakes()); got != 0 {
		t.Errorf("the back end saw %d handshakes; every one should have been denied", got)
	}
}

func TestRESTRoute(t *testing.T) {
	s := newStack(t, false)
	resp, err := http.Get(s.listenURL("http", "/api/health"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Status string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body.Status != "ok" {
		t.Fatalf("GET /api/health: %d %+v %v", resp.StatusCode, body, err)
	}
	// REST routes refuse upgrades: a stream cannot sneak onto the REST path.
	up, _ := upgrade(t, s.listenURL("http", "/api/health"), nil)
	if up.StatusCode == http.StatusSwitchingProtocols {
		t.Error("the REST route upgraded a WebSocket")
	}
}

// TestUpgradeChainIsMinimal reads Envoy's own view of the listener: the
// WebSocket upgrade chain is exactly the handshake filter and the router.
func TestUpgradeChainIsMinimal(t *testing.T) {
	s := newStack(t, false)
	dump, err := s.envoy.ConfigDump(context.Background(), "dynamic_listeners")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Configs []struct {
			ActiveState struct {
				Listener struct {
					Name         string `json:"name"`
					FilterChains []struct {
						Filters []struct {
							Name        string `json:"name"`
							TypedConfig struct {
								UpgradeConfigs []struct {
									UpgradeType string `json:"upgrade_type"`
									Filters     []struct {
										Name string `json:"name"`
									} `json:"filters"`
								} `json:"upgrade_configs"`
								HTTPFilters []struct {
									Name string `json:"name"`
								} `json:"http_filters"`
								RDS struct {
									RouteConfigName string `json:"route_config_name"`
								} `json:"rds"`
							} `json:"typed_config"`
						} `json:"filters"`
					} `json:"filter_chains"`
				} `json:"listener"`
			} `json:"active_state"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(dump, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Configs) != 1 {
		t.Fatalf("%d dynamic listeners, want 1", len(doc.Configs))
	}
	hcm := doc.Configs[0].ActiveState.Listener.FilterChains[0].Filters[0].TypedConfig
	if hcm.RDS.RouteConfigName != "public" {
		t.Errorf("routes do not come by RDS: %+v", hcm.RDS)
	}
	if len(hcm.UpgradeConfigs) != 1 || hcm.UpgradeConfigs[0].UpgradeType != "websocket" {
		t.Fatalf("upgrade configs: %+v", hcm.UpgradeConfigs)
	}
	var chain []string
	for _, f := range hcm.UpgradeConfigs[0].Filters {
		chain = append(chain, f.Name)
	}
	if want := []string{"directpipe.handshake", "envoy.filters.http.router"}; !slices.Equal(chain, want) {
		t.Errorf("upgrade chain = %v, want %v", chain, want)
	}
	var rest []string
	for _, f := range hcm.HTTPFilters {
		rest = append(rest, f.Name)
	}
	if len(rest) <= len(chain) {
		t.Errorf("REST chain %v is not the full chain", rest)
	}
}

func TestForwardedHandshakeCarriesNoToken(t *testing.T) {
	s := newStack(t, false)
	tok := validToken(t)
	spoof := http.Header{"X-Directpipe-Identity": {"admin"}, "X-Directpipe-Sub": {"admin"}}
	cases := []struct {
		name   string
		query  string
		header http.Header
		ident  string
	}{
		{"bearer", "?call=1", http.Header{"Authorization": {"Bearer " + tok}}, "caller-1"},
		{"query", "?call=2&access_token=" + tok + "&lang=en", nil, "caller-1"},
		{"api key", "?access_token=" + demoAPIKey, nil, "demo-client"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range spoof {
				h[k] = v
			}
			for k, v := range c.header {
				h[k] = v
			}
			resp, body := upgrade(t, s.listenURL("http", "/v1/voice"+c.query), h)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d %s", resp.StatusCode, body)
			}
			hs := s.handshakes()
			last := hs[len(hs)-1]
			if strings.Contains(last.Path, "access_token") || strings.Contains(last.Path, tok) {
				t.Errorf("forwarded path carries the token: %s", last.Path)
			}
			if c.name == "query" && last.Path != "/v1/voice?call=2&lang=en" {
				t.Errorf("other query parameters not kept: %s", last.Path)
			}
			if _, ok := last.Headers["authorization"]; ok {
				t.Error("forwarded handshake carries Authorization")
			}
			for name, vals := range last.Headers {
				for _, v := range vals {
					if strings.Contains(v, tok) || strings.Contains(v, demoAPIKey) {
						t.Errorf("header %s carries the token", name)
					}
				}
			}
			if got := last.Headers["x-directpipe-identity"]; len(got) != 1 || got[0] != c.ident {
				t.Errorf("identity header = %v, want [%s] (spoofed copy removed)", got, c.ident)
			}
		})
	}
}

// TestOriginDenied: a page from another site cannot open a stream, even
// with a valid token (cross-site WebSocket hijacking).
func TestOriginDenied(t *testing.T) {
	s := newStack(t, false)
	h := http.Header{"Authorization": {"Bearer " + validToken(t)}, "Origin": {"https://evil.example.net"}}
	resp, body := upgrade(t, s.listenURL("http", "/v1/voice"), h)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "origin_not_allowed") {
		t.Fatalf("foreign origin: %d %s", resp.StatusCode, body)
	}
	h.Set("Origin", "http://"+s.backend.VoiceAddr)
	if resp, body := upgrade(t, s.listenURL("http", "/v1/voice"), h); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("allowed origin: %d %s", resp.StatusCode, body)
	}
}

// TestClaimChecks runs each claim denial through Envoy on a route whose
// token comes in a named header.
func TestClaimChecks(t *testing.T) {
	s := newStack(t, false)
	now := time.Now()
	token := func(extra jwt.MapClaims) string {
		c := jwt.MapClaims{"sub": "caller-3", "exp": now.Add(time.Hour).Unix(), "iss": "https://idp.example.com", "aud": "voice", "scope": "voice:stream"}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return mint(t, devSecret, "dev", c)
	}
	tests := []struct {
		name   string
		token  string
		status int
		reason string
	}{
		{"all claims", token(nil), http.StatusSwitchingProtocols, ""},
		{"wrong issuer", token(jwt.MapClaims{"iss": "https://other.example.com"}), http.StatusUnauthorized, "invalid_issuer"},
		{"wrong audience", token(jwt.MapClaims{"aud": "billing"}), http.StatusUnauthorized, "invalid_audience"},
		{"missing scope", token(jwt.MapClaims{"scope": "profile"}), http.StatusForbidden, "insufficient_scope"},
		{"issued in the future", token(jwt.MapClaims{"iat": now.Add(time.Hour).Unix()}), http.StatusUnauthorized, "token_not_yet_valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := upgrade(t, s.listenURL("http", "/v1/strict"), http.Header{"X-Voice-Token": {tt.token}})
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.reason) {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, body, tt.status, tt.reason)
			}
			if tt.reason == "insufficient_scope" && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	hs := s.handshakes()
	if got := hs[len(hs)-1].Headers["x-voice-token"]; len(got) != 0 {
		t.Error("the named token header was forwarded")
	}
}

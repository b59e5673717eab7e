//go:build !wasip1

package e2e

import (
	"net/http"
	"testing"
)

// TestRedirectDefaultPort proves in a real Envoy that a redirect to
// another scheme never writes that scheme's default port when it can be
// left out, and sends a Host that names another port to the default one:
// the Location a browser is sent for http→https is https://host/path.
func TestRedirectDefaultPort(t *testing.T) {
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = `  - { name: to-tls, match: { prefix: /plain/ }, kind: http, redirect: { scheme: https } }
  - { name: to-tls-443, match: { prefix: /plain443/ }, kind: http, redirect: { scheme: https, port: 443, status_code: 308 } }
  - { name: to-docs, match: { prefix: /docs/ }, kind: http, redirect: { scheme: https, host: docs.example.com, port: 443, prefix: /v2/ } }
  - { name: to-tls-8443, match: { prefix: /alt/ }, kind: http, redirect: { scheme: https, port: 8443 } }`
	})
	forwarded := func() int64 {
		n, err := s.envoy.Stat(t.Context(), "cluster.rest.upstream_rq_total")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := forwarded()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		path, host string
		status     int
		location   string
	}{
		{"/plain/a?q=1", "example.com", 301, "https://example.com/plain/a?q=1"},
		{"/plain/a", "example.com:80", 301, "https://example.com/plain/a"},
		// Envoy cannot write the host without the port the client named:
		// the new scheme's default port, by name, is where it goes.
		{"/plain/a", "example.com:8080", 301, "https://example.com:443/plain/a"},
		{"/plain/a", "[::1]:8080", 301, "https://[::1]:443/plain/a"},
		{"/plain/a", "[::1]", 301, "https://[::1]/plain/a"},
		{"/plain443/a", "example.com", 308, "https://example.com/plain443/a"},
		{"/plain443/a", "example.com:8080", 308, "https://example.com:443/plain443/a"},
		{"/docs/x?y=2", "example.com:8080", 301, "https://docs.example.com/v2/x?y=2"},
		{"/alt/a", "example.com", 301, "https://example.com:8443/alt/a"},
		{"/alt/a", "example.com:8080", 301, "https://example.com:8443/alt/a"},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://"+s.params.Listen+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = c.host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Location"); resp.StatusCode != c.status || got != c.location {
			t.Errorf("GET %s Host %s: %d Location %q, want %d %q", c.path, c.host, resp.StatusCode, got, c.status, c.location)
		}
	}
	if n := forwarded() - before; n != 0 {
		t.Errorf("Envoy forwarded %d requests to the back end; a redirect forwards none", n)
	}
}

package mtls

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestBinding(t *testing.T) {
	u := func(s string) *url.URL {
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	spiffe := &x509.Certificate{URIs: []*url.URL{u("spiffe://directpipe/node/edge-1")}, DNSNames: []string{"edge-2.envoy.example.com"}}
	for _, tc := range []struct {
		pattern, node string
		cert          *x509.Certificate
		err           string
	}{
		{"spiffe://directpipe/node/{node}", "edge-1", spiffe, ""},
		{"spiffe://directpipe/node/{node}", "edge-2", spiffe, `node id "edge-2" does not match the client certificate, which is for node "edge-1"`},
		// A DNS pattern reads DNS SANs only.
		{"{node}.envoy.example.com", "edge-2", spiffe, ""},
		{"{node}.envoy.example.com", "edge-1", spiffe, "does not match"},
		{"spiffe://other/node/{node}", "edge-1", spiffe, "no URI SAN of the form spiffe://other/node/{node}"},
		// The node part may not be empty, and a prefix is not a match.
		{"spiffe://directpipe/node/{node}", "", spiffe, "does not match"},
		{"spiffe://directpipe/node/{node}", "edge-", spiffe, "does not match"},
		{"spiffe://directpipe/node/{node}", strings.Repeat("x", 1000), spiffe, "…"},
	} {
		b, err := NewBinding(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Check(tc.cert, tc.node)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s %q: %v", tc.pattern, tc.node, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s %q: got %v, want %q", tc.pattern, tc.node, err, tc.err)
		}
	}
	for _, bad := range []string{"spiffe://x/node", "{node}{node}", ""} {
		if _, err := NewBinding(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

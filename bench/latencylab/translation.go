//go:build linux

package latencylab

import (
	"fmt"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
)

// syntheticPolicy has n routes, alternating WebSocket and REST, over ten
// back ends and two auth policies.
func syntheticPolicy(n int) *policyv1.Policy {
	p := &policyv1.Policy{Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}}
	for b := range 10 {
		p.Backends = append(p.Backends, &policyv1.Backend{Name: fmt.Sprintf("b%d", b), Endpoints: []string{fmt.Sprintf("10.0.0.%d:8080", b+1)}})
	}
	for a := range 2 {
		p.AuthPolicies = append(p.AuthPolicies, &policyv1.AuthPolicy{
			Name:    fmt.Sprintf("auth%d", a),
			Sources: []*policyv1.TokenSource{{Source: &policyv1.TokenSource_Bearer{Bearer: true}}},
			Jwt:     &policyv1.JWT{Keys: []*policyv1.JWK{{Kty: "oct", Kid: "k", Alg: "HS256", K: "ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"}}},
		})
	}
	for i := range n {
		r := &policyv1.Route{Name: fmt.Sprintf("r%d", i), Match: &policyv1.RouteMatch{Prefix: fmt.Sprintf("/r%d/", i)}, Backend: fmt.Sprintf("b%d", i%10)}
		if i%2 == 0 {
			r.Kind, r.Auth = policy.KindWebSocket, fmt.Sprintf("auth%d", i%4/2)
		} else {
			r.Kind = policy.KindHTTP
		}
		p.Routes = append(p.Routes, r)
	}
	return p
}

// timeTranslation times validation plus translation, the work of one apply
// before the push, as the best of three runs (the least disturbed by noise).
func timeTranslation(counts []int) ([]Translation, error) {
	var out []Translation
	for _, n := range counts {
		p := syntheticPolicy(n)
		best := time.Duration(1<<63 - 1)
		for range 3 {
			start := time.Now()
			if err := policy.Validate(p); err != nil {
				return nil, err
			}
			if _, err := translate.Translate(p, translate.Options{Module: translate.ModuleSource{File: "/handshake.wasm"}}); err != nil {
				return nil, err
			}
			best = min(best, time.Since(start))
		}
		out = append(out, Translation{Routes: n, Time: best})
	}
	return out, nil
}

// Package jwks reads the verification keys an auth policy names by file or
// URL, so that the control plane can push them to the filter by ECDS: the
// filter itself never makes an outbound call.
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

const (
	// DefaultRefresh is how often a JWKS URL is fetched again.
	DefaultRefresh = 5 * time.Minute
	// maxDocumentBytes bounds a JWKS document: real ones are a few KiB.
	maxDocumentBytes = 1 << 20
	fetchTimeout     = 5 * time.Second
)

// Resolver reads and caches key sets. It is safe for concurrent use.
type Resolver struct {
	client *http.Client
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]fetched // by URL
}

type fetched struct {
	keys []*policyv1.JWK
	at   time.Time
}

// NewResolver returns a resolver that fetches with client (nil: a client
// with a short timeout).
func NewResolver(client *http.Client) *Resolver {
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	return &Resolver{client: client, now: time.Now, cache: map[string]fetched{}}
}

// Resolve returns, by auth policy name, the keys of each policy's
// jwks_file (read every time: it is cheap and may have been rotated) and
// jwks_url (fetched when older than its refresh interval). A URL that cannot
// be fetched keeps its last good keys; one never fetched is an error.
func (r *Resolver) Resolve(ctx context.Context, p *policyv1.Policy) (map[string][]*policyv1.JWK, error) {
	out := map[string][]*policyv1.JWK{}
	var errs []error
	for _, a := range p.GetAuthPolicies() {
		j := a.GetJwt()
		if f := j.GetJwksFile(); f != "" {
			keys, err := readFile(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("auth policy %q: %w", a.GetName(), err))
			}
			out[a.GetName()] = append(out[a.GetName()], keys...)
		}
		if u := j.GetJwksUrl(); u != "" {
			refresh := DefaultRefresh
			if d := j.GetJwksRefresh(); d != nil {
				refresh = d.AsDuration()
			}
			keys, err := r.url(ctx, u, refresh)
			if err != nil {
				errs = append(errs, fmt.Errorf("auth policy %q: %w", a.GetName(), err))
			}
			out[a.GetName()] = append(out[a.GetName()], keys...)
		}
	}
	return out, errors.Join(errs...)
}

// NextRefresh is how long until the soonest cached URL goes stale; zero
// when the policy names no URL.
func NextRefresh(p *policyv1.Policy) time.Duration {
	var next time.Duration
	for _, a := range p.GetAuthPolicies() {
		if a.GetJwt().GetJwksUrl() == "" {
			continue
		}
		d := DefaultRefresh
		if r := a.GetJwt().GetJwksRefresh(); r != nil {
			d = r.AsDuration()
		}
		if next == 0 || d < next {
			next = d
		}
	}
	return next
}

func (r *Resolver) url(ctx context.Context, u string, refresh time.Duration) ([]*policyv1.JWK, error) {
	r.mu.Lock()
	c, ok := r.cache[u]
	r.mu.Unlock()
	if ok && r.now().Sub(c.at) < refresh {
		return c.keys, nil
	}
	keys, err := r.fetch(ctx, u)
	if err != nil {
		if ok {
			return c.keys, nil // keep serving the last good keys
		}
		return nil, err
	}
	r.mu.Lock()
	r.cache[u] = fetched{keys: keys, at: r.now()}
	r.mu.Unlock()
	return keys, nil
}

func (r *Resolver) fetch(ctx context.Context, u string) ([]*policyv1.JWK, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: HTTP %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", u, err)
	}
	keys, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", u, err)
	}
	return keys, nil
}

func readFile(path string) ([]*policyv1.JWK, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwks file: %w", err)
	}
	keys, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("jwks file %s: %w", path, err)
	}
	return keys, nil
}

// Parse reads a JWKS document. Keys for encryption (use "enc") are
// skipped; every signing key must be valid, and at least one must exist.
func Parse(body []byte) ([]*policyv1.JWK, error) {
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("more than %d bytes", maxDocumentBytes)
	}
	var doc struct {
		Keys []struct {
			Kty, Kid, Alg, Use, K, N, E, Crv, X, Y string
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	var out []*policyv1.JWK
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		jwk := &policyv1.JWK{Kty: k.Kty, Kid: k.Kid, Alg: k.Alg, K: k.K, N: k.N, E: k.E, Crv: k.Crv, X: k.X, Y: k.Y}
		if err := policy.ValidateJWK(jwk); err != nil {
			return nil, fmt.Errorf("keys[%d] (kid %q): %w", i, k.Kid, err)
		}
		out = append(out, jwk)
	}
	if len(out) == 0 {
		return nil, errors.New("no signing key")
	}
	return out, nil
}

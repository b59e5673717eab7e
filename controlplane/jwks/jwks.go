// Package jwks reads the verification keys an auth policy names by file or
// URL, so that the control plane can push them to the filter by ECDS: the
// filter itself never makes an outbound call.
package jwks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

const (
	// DefaultRefresh is how often a JWKS URL is fetched again.
	DefaultRefresh = 5 * time.Minute
	// maxDocumentBytes bounds a JWKS document: real ones are a few KiB.
	maxDocumentBytes = 1 << 20
	fetchTimeout     = 5 * time.Second
	maxRedirects     = 5
)

// Source kinds, as Status names them.
const (
	KindFile = "file"
	KindURL  = "url"
)

// Resolver reads and caches key sets, keeping each source's last good
// keys through failures. It is safe for concurrent use.
type Resolver struct {
	client  *http.Client
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics

	// shared, when set, makes replicas serve the same URL key sets: the
	// leader fetches and stores each document, the others read it.
	shared Shared
	// dir is the directory every jwks_file must be in; "" refuses them.
	dir string

	mu      sync.Mutex
	sources map[sourceKey]*source
	// warned holds the duplicate kids already logged, so that a set read
	// every 10 s does not log the same warning every 10 s.
	warned map[string]bool
}

// Shared is where replicas keep the key set documents fetched from
// jwks_url: one replica (the leader) fetches, and every replica parses the
// same bytes, so that every Envoy is pushed the same keys whichever
// replica serves it.
type Shared interface {
	// Leading reports whether this replica fetches.
	Leading() bool
	// Fetched returns the document stored for url, if any.
	Fetched(ctx context.Context, url string) ([]byte, bool, error)
	// StoreFetched stores the document fetched from url.
	StoreFetched(ctx context.Context, url string, doc []byte) error
}

// Share makes the resolver take URL key sets from s (see Shared). Call it
// before the first Resolve.
func (r *Resolver) Share(s Shared) { r.shared = s }

// guardedTransport is the default transport that refuses to connect to
// link-local, metadata and other internal targets (policy.InternalTarget)
// whatever name led there: a jwks_url whose host name resolves to
// 169.254.169.254 would otherwise have the control plane read the cloud
// metadata service. The check runs on the address being dialled, after
// resolution, so a name that changes its answer cannot slip past it.
func guardedTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: fetchTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		if why := policy.InternalTarget(address); why != "" {
			return fmt.Errorf("refusing to fetch keys from %s: %s", address, why)
		}
		return nil
	}}
	// Through an HTTPS_PROXY the proxy dials: the operator's choice, and
	// the check sees only the proxy.
	t.DialContext = d.DialContext
	return t
}

// ConfineFiles makes the resolver read jwks_file only inside dir (a
// relative jwks_file is taken from dir): a policy, which may come through
// the admin API, must not make the control plane read any file it can. ""
// refuses every jwks_file. Call it before the first Resolve.
func (r *Resolver) ConfineFiles(dir string) { r.dir = dir }

// sourceKey names a cached set: the same document read for two policies
// with different default RSA algorithms is two sets.
type sourceKey struct{ kind, location, defaultRSA string }

// source is one key set's last good keys and its read history.
type source struct {
	keys        []*policyv1.JWK
	skipped     []string
	lastSuccess time.Time
	lastError   string
	lastErrorAt time.Time
}

// Status is one key source of one auth policy, for the admin API.
type Status struct {
	Policy, Kind, Location string
	// Keys is how many keys of the last good set are served; Skipped says
	// which keys of it were not, and why.
	Keys    int
	Skipped []string
	// LastSuccess is zero until the source was read once; LastError is the
	// latest failure, kept after later successes so that a flapping
	// source shows.
	LastSuccess time.Time
	LastError   string
	LastErrorAt time.Time
}

type metrics struct {
	failures    *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
}

// NewResolver returns a resolver that fetches with client (nil: a client
// with a short timeout), logs to log (nil: slog.Default) and counts reads
// in reg (nil: nowhere).
func NewResolver(client *http.Client, log *slog.Logger, reg prometheus.Registerer) *Resolver {
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout, Transport: guardedTransport()}
	}
	// A redirect is a new URL: it must pass the policy's URL rule too, or an
	// https key set could be moved to plain http.
	c := *client
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		if err := policy.CheckJWKSURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirected: %w", err)
		}
		return nil
	}
	client = &c
	if log == nil {
		log = slog.Default()
	}
	r := &Resolver{client: client, now: time.Now, log: log, sources: map[sourceKey]*source{}, warned: map[string]bool{}}
	if reg != nil {
		r.metrics = &metrics{
			failures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "directpipe_jwks_refresh_failures_total",
				Help: "Failed reads of a jwks_file or fetches of a jwks_url; the last good keys keep serving.",
			}, []string{"source"}),
			lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "directpipe_jwks_last_success_timestamp_seconds",
				Help: "When a key source was last read successfully (Unix time).",
			}, []string{"source"}),
		}
		reg.MustRegister(r.metrics.failures, r.metrics.lastSuccess)
	}
	return r
}

// Resolve returns, by auth policy name, the keys of each policy's
// jwks_file (read every time: it is cheap and may have been rotated) and
// jwks_url (fetched when older than its refresh interval). A source that
// fails keeps its last good keys, and the failure is logged, counted and
// kept for Sources; a source never read successfully is an error. A kid
// that the policy's own keys or an earlier source already use is skipped
// with a warning: the filter picks keys by kid.
func (r *Resolver) Resolve(ctx context.Context, p *policyv1.Policy) (map[string][]*policyv1.JWK, error) {
	out := map[string][]*policyv1.JWK{}
	var errs []error
	for _, a := range p.GetAuthPolicies() {
		j := a.GetJwt()
		kids := map[string]bool{}
		for _, k := range j.GetKeys() {
			kids[k.GetKid()] = true
		}
		for _, key := range sourcesOf(j) {
			keys, err := r.read(ctx, key, refreshOf(j))
			if err != nil {
				errs = append(errs, fmt.Errorf("auth policy %q: %w", a.GetName(), err))
				continue
			}
			for _, k := range keys {
				if kids[k.GetKid()] {
					r.warnOnce(a.GetName()+"\x00"+key.location+"\x00"+k.GetKid(), "key skipped: its kid is already used by another key of the policy",
						"policy", a.GetName(), "source", key.location, "kid", k.GetKid())
					continue
				}
				kids[k.GetKid()] = true
				out[a.GetName()] = append(out[a.GetName()], k)
			}
		}
	}
	return out, errors.Join(errs...)
}

func (r *Resolver) warnOnce(id, msg string, args ...any) {
	r.mu.Lock()
	seen := r.warned[id]
	r.warned[id] = true
	r.mu.Unlock()
	if !seen {
		r.log.Warn(msg, args...)
	}
}

// Sources reports the state of every key source p names, in policy order.
func (r *Resolver) Sources(p *policyv1.Policy) []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Status
	for _, a := range p.GetAuthPolicies() {
		for _, key := range sourcesOf(a.GetJwt()) {
			st := Status{Policy: a.GetName(), Kind: key.kind, Location: key.location}
			if s := r.sources[key]; s != nil {
				st.Keys, st.Skipped = len(s.keys), slices.Clone(s.skipped)
				st.LastSuccess, st.LastError, st.LastErrorAt = s.lastSuccess, s.lastError, s.lastErrorAt
			}
			out = append(out, st)
		}
	}
	return out
}

func sourcesOf(j *policyv1.JWT) []sourceKey {
	var out []sourceKey
	if f := j.GetJwksFile(); f != "" {
		out = append(out, sourceKey{KindFile, f, j.GetDefaultRsaAlg()})
	}
	if u := j.GetJwksUrl(); u != "" {
		out = append(out, sourceKey{KindURL, u, j.GetDefaultRsaAlg()})
	}
	return out
}

func refreshOf(j *policyv1.JWT) time.Duration {
	if d := j.GetJwksRefresh(); d != nil {
		return d.AsDuration()
	}
	return DefaultRefresh
}

// NextRefresh is how long until the soonest cached URL goes stale; zero
// when the policy names no URL.
func NextRefresh(p *policyv1.Policy) time.Duration {
	var next time.Duration
	for _, a := range p.GetAuthPolicies() {
		if a.GetJwt().GetJwksUrl() == "" {
			continue
		}
		if d := refreshOf(a.GetJwt()); next == 0 || d < next {
			next = d
		}
	}
	return next
}

// read returns a source's keys: read again when it is a file or a URL
// whose keys are older than refresh, else the cached ones.
func (r *Resolver) read(ctx context.Context, key sourceKey, refresh time.Duration) ([]*policyv1.JWK, error) {
	r.mu.Lock()
	s := r.sources[key]
	if s == nil {
		s = &source{}
		r.sources[key] = s
	}
	fresh := key.kind == KindURL && !s.lastSuccess.IsZero() && r.now().Sub(s.lastSuccess) < refresh
	keys := s.keys
	r.mu.Unlock()
	var body []byte
	var err error
	switch {
	case key.kind == KindURL && r.shared != nil && !r.shared.Leading():
		body, err = r.readShared(ctx, key.location)
	case fresh:
		return keys, nil
	case key.kind == KindFile:
		body, err = readFile(r.dir, key.location)
	default:
		body, err = r.fetch(ctx, key.location)
		if err == nil && r.shared != nil {
			r.storeShared(ctx, key.location, body)
		}
	}
	var skipped []string
	if err == nil {
		keys, skipped, err = Parse(body, key.defaultRSA)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("jwks %s %s: %w", key.kind, key.location, err)
		if s.lastError != err.Error() {
			r.log.Warn("reading a key set failed; its last good keys keep serving", "source", key.location, "error", err)
		}
		s.lastError, s.lastErrorAt = err.Error(), r.now()
		if r.metrics != nil {
			r.metrics.failures.WithLabelValues(key.location).Inc()
		}
		if s.lastSuccess.IsZero() {
			return nil, err
		}
		return s.keys, nil
	}
	if !slices.Equal(skipped, s.skipped) {
		for _, why := range skipped {
			r.log.Warn("key skipped", "source", key.location, "why", why)
		}
	}
	if s.lastError != "" && s.lastErrorAt.After(s.lastSuccess) {
		r.log.Info("key set read again after a failure", "source", key.location)
	}
	s.keys, s.skipped, s.lastSuccess = keys, skipped, r.now()
	if r.metrics != nil {
		r.metrics.lastSuccess.WithLabelValues(key.location).Set(float64(s.lastSuccess.Unix()))
	}
	return keys, nil
}

// readShared returns the document the leader stored for u; one never
// stored yet (a policy that names a new URL, applied through a replica
// that does not lead) is fetched here and stored, and the leader refreshes
// it from then on.
func (r *Resolver) readShared(ctx context.Context, u string) ([]byte, error) {
	doc, ok, err := r.shared.Fetched(ctx, u)
	if err != nil || ok {
		return doc, err
	}
	doc, err = r.fetch(ctx, u)
	if err == nil {
		r.storeShared(ctx, u, doc)
	}
	return doc, err
}

// storeShared stores a fetched document unless it is what is stored.
func (r *Resolver) storeShared(ctx context.Context, u string, doc []byte) {
	if old, ok, err := r.shared.Fetched(ctx, u); err == nil && ok && bytes.Equal(old, doc) {
		return
	}
	if err := r.shared.StoreFetched(ctx, u, doc); err != nil {
		r.log.Warn("storing a fetched key set for the other replicas failed; they keep the last stored one", "source", u, "error", err)
	}
}

func (r *Resolver) fetch(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return readBounded(resp.Body)
}

// readFile reads path inside dir. os.Root refuses a path that leaves dir
// by "..", or by a symbolic link, at the moment of opening.
func readFile(dir, path string) ([]byte, error) {
	if dir == "" {
		return nil, errors.New("jwks_file is not allowed: the control plane reads key files only from its -jwks-dir")
	}
	rel := path
	if filepath.IsAbs(path) {
		var err error
		if rel, err = filepath.Rel(dir, path); err != nil || !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("not in the key directory %s (-jwks-dir)", dir)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, fmt.Errorf("not readable in the key directory %s (-jwks-dir): %w", dir, errors.Unwrap(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return readBounded(f)
}

// readBounded reads at most maxDocumentBytes, and refuses more.
func readBounded(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxDocumentBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("more than %d bytes", maxDocumentBytes)
	}
	return body, nil
}

// Parse reads a JWKS document. Keys for encryption (use other than "sig")
// are left out; a signing key the filter cannot use (an unknown kty or
// alg, no kid, a kid used twice, a bad RSA exponent, an RSA key without
// alg and no defaultRSA) is skipped, and skipped says which and why, so
// one odd key at an identity provider does not take the whole set down.
// Keys without alg are bound by kty and crv (auth.BindAlg). A document
// with no usable signing key is an error.
func Parse(body []byte, defaultRSA string) (keys []*policyv1.JWK, skipped []string, err error) {
	if len(body) > maxDocumentBytes {
		return nil, nil, fmt.Errorf("more than %d bytes", maxDocumentBytes)
	}
	var doc struct {
		Keys []struct {
			Kty, Kid, Alg, Use, K, N, E, Crv, X, Y string
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, notJWKS(err)
	}
	kids := map[string]bool{}
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		skip := func(why string) { skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %q): %s", i, k.Kid, why)) }
		jwk := &policyv1.JWK{Kty: k.Kty, Kid: k.Kid, Alg: k.Alg, K: k.K, N: k.N, E: k.E, Crv: k.Crv, X: k.X, Y: k.Y}
		switch {
		case k.Kid == "":
			skip("no kid: the filter picks a key of a set by kid")
			continue
		case kids[k.Kid]:
			skip("kid used by an earlier key")
			continue
		}
		if err := policy.ValidateJWK(jwk, defaultRSA); err != nil {
			skip(err.Error())
			continue
		}
		kids[k.Kid] = true
		jwk.Alg = policy.FilterJWK(jwk, defaultRSA).Alg
		keys = append(keys, jwk)
	}
	if len(keys) == 0 {
		if len(skipped) > 0 {
			return nil, skipped, fmt.Errorf("no usable signing key (%s)", strings.Join(skipped, "; "))
		}
		return nil, nil, errors.New("no signing key")
	}
	return keys, skipped, nil
}

// notJWKS says why a document is not a key set without quoting it: the
// decoder's messages quote the byte they stopped at, and a jwks_file
// pointed at another file must not leak it byte by byte.
func notJWKS(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("not a JWKS document: not JSON (invalid at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("not a JWKS document: %s is not a %s", typ.Field, typ.Type)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("not a JWKS document: not JSON (it ends early)")
	}
	return errors.New("not a JWKS document")
}

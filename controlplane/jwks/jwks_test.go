package jwks

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

const ecKey = `{"kty":"EC","kid":"ec1","alg":"ES256","use":"sig","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`
const hmacKey = `{"kty":"oct","kid":"h1","alg":"HS256","k":"ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"}`

// rsaKey is a 2048-bit RSA public key (e = 65537) as a JWK without kid and alg.
func rsaKey(kid, alg, e string) string {
	n := base64.RawURLEncoding.EncodeToString(append([]byte{0xc1}, append(make([]byte, 254), 0x01)...))
	return fmt.Sprintf(`{"kty":"RSA","kid":%q,"alg":%q,"n":%q,"e":%q}`, kid, alg, n, e)
}

// TestParse: a key the filter cannot use is skipped with its reason, and
// the rest of the set still serves; keys without alg are bound by type.
func TestParse(t *testing.T) {
	ecNoAlg := strings.Replace(ecKey, `"alg":"ES256",`, "", 1)
	tests := []struct {
		name, doc, defaultRSA string
		algs                  []string // of the keys kept, in order
		skipped               []string // one substring per skipped key
		err                   string
	}{
		{"two keys", `{"keys":[` + ecKey + `,` + hmacKey + `]}`, "", []string{"ES256", "HS256"}, nil, ""},
		{"encryption key left out", `{"keys":[` + ecKey + `,{"kty":"RSA","use":"enc","n":"x","e":"AQAB"}]}`, "", []string{"ES256"}, nil, ""},
		{"unknown alg skipped", `{"keys":[` + ecKey + `,` + rsaKey("r1", "RSA-OAEP-256", "AQAB") + `]}`, "", []string{"ES256"}, []string{`kid "r1"): alg "RSA-OAEP-256" does not go with kty "RSA"`}, ""},
		{"unsupported alg skipped", `{"keys":[` + rsaKey("r1", "PS512", "AQAB") + `,` + ecKey + `]}`, "", []string{"ES256"}, []string{`alg "PS512"`}, ""},
		{"missing kid skipped", `{"keys":[` + strings.Replace(ecKey, `"kid":"ec1",`, "", 1) + `,` + hmacKey + `]}`, "", []string{"HS256"}, []string{"no kid"}, ""},
		{"duplicate kid skipped", `{"keys":[` + ecKey + `,` + strings.Replace(hmacKey, `"h1"`, `"ec1"`, 1) + `]}`, "", []string{"ES256"}, []string{`kid "ec1"): kid used by an earlier key`}, ""},
		{"rsa exponent too large", `{"keys":[` + rsaKey("r1", "RS256", "AQAAAAE") + `,` + ecKey + `]}`, "", []string{"ES256"}, []string{"RSA exponent of 5 bytes is out of range"}, ""},
		{"rsa exponent even", `{"keys":[` + rsaKey("r1", "RS256", "AQAA") + `,` + ecKey + `]}`, "", []string{"ES256"}, []string{"RSA exponent 65536 is out of range"}, ""},
		{"short hmac skipped", `{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2hvcnQ"},` + ecKey + `]}`, "", []string{"ES256"}, []string{"key is 5 bytes; HS256 needs at least 32"}, ""},
		{"ec without alg bound to ES256", `{"keys":[` + ecNoAlg + `]}`, "", []string{"ES256"}, nil, ""},
		{"rsa without alg skipped without a default", `{"keys":[` + rsaKey("r1", "", "AQAB") + `,` + ecKey + `]}`, "", []string{"ES256"}, []string{"no default RSA algorithm"}, ""},
		{"rsa without alg bound to the default", `{"keys":[` + rsaKey("r1", "", "AQAB") + `]}`, "RS256", []string{"RS256"}, nil, ""},
		{"nothing usable", `{"keys":[` + rsaKey("r1", "", "AQAB") + `]}`, "", nil, nil, "no usable signing key (keys[0] (kid \"r1\"): an RSA key names no alg"},
		{"empty", `{"keys":[]}`, "", nil, nil, "no signing key"},
		{"garbage", `<html>`, "", nil, nil, "not a JWKS document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, skipped, err := Parse([]byte(tt.doc), tt.defaultRSA)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var algs []string
			for _, k := range keys {
				algs = append(algs, k.GetAlg())
			}
			if !slices.Equal(algs, tt.algs) {
				t.Errorf("kept algs %v, want %v", algs, tt.algs)
			}
			if len(skipped) != len(tt.skipped) {
				t.Fatalf("skipped %q, want %d", skipped, len(tt.skipped))
			}
			for i, want := range tt.skipped {
				if !strings.Contains(skipped[i], want) {
					t.Errorf("skipped[%d] = %q, want %q", i, skipped[i], want)
				}
			}
		})
	}
}

func policyWith(j *policyv1.JWT) *policyv1.Policy {
	return &policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "p", Jwt: j}}}
}

func TestResolveURLCachesRefreshesAndKeepsLastGood(t *testing.T) {
	var hits atomic.Int32
	var broken atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if broken.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		w.Write([]byte(`{"keys":[` + ecKey + `]}`))
	}))
	defer srv.Close()
	r := NewResolver(srv.Client(), nil, nil)
	clock := time.Now()
	r.now = func() time.Time { return clock }
	p := policyWith(&policyv1.JWT{JwksUrl: srv.URL, JwksRefresh: durationpb.New(time.Minute)})
	ctx := context.Background()
	for range 3 {
		keys, err := r.Resolve(ctx, p)
		if err != nil || len(keys["p"]) != 1 {
			t.Fatalf("%v %v", keys, err)
		}
	}
	if hits.Load() != 1 {
		t.Errorf("fetched %d times within the refresh interval, want 1", hits.Load())
	}
	clock = clock.Add(2 * time.Minute)
	broken.Store(true)
	keys, err := r.Resolve(ctx, p)
	if err != nil || len(keys["p"]) != 1 || hits.Load() != 2 {
		t.Errorf("a failed refresh must keep the last good keys: %v %v (hits %d)", keys, err, hits.Load())
	}
	if _, err := NewResolver(srv.Client(), nil, nil).Resolve(ctx, p); err == nil {
		t.Error("a URL never fetched successfully must be an error")
	}
}

// confined is a resolver that reads key files in dir only.
func confined(dir string) *Resolver {
	r := NewResolver(nil, nil, nil)
	r.ConfineFiles(dir)
	return r
}

func TestResolveFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jwks.json")
	os.WriteFile(path, []byte(`{"keys":[`+hmacKey+`]}`), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "jwks.json"), []byte(`{"keys":[`+hmacKey+`]}`), 0o644)
	outside := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(outside, []byte("root:$6$secret:19000:0:99999:7:::\n"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "link.json"))
	os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("root:$6$secret"), 0o600)
	os.WriteFile(filepath.Join(dir, "typed.json"), []byte(`{"keys":"s3cr3t"}`), 0o600)
	for _, tt := range []struct {
		name, dir, file string
		want            string // "": one key read
	}{
		{"absolute, inside", dir, path, ""},
		{"relative, inside", dir, "jwks.json", ""},
		{"in a subdirectory", dir, "sub/jwks.json", ""},
		{"no key directory", "", path, "jwks_file is not allowed"},
		{"absolute, outside", dir, outside, "not in the key directory"},
		{"dot-dot out", dir, "sub/../../" + filepath.Base(filepath.Dir(outside)) + "/shadow", "not readable in the key directory"},
		{"symlink out", dir, "link.json", "not readable in the key directory"},
		{"missing", dir, path + ".missing", "not readable in the key directory"},
		{"a directory", dir, "sub", "not a regular file"},
		{"not JSON: no byte of it is quoted", dir, "secret.txt", "not JSON (invalid at byte 1)"},
		{"wrong type: no value is quoted", dir, "typed.json", "not a JWKS document"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := confined(tt.dir).Resolve(context.Background(), policyWith(&policyv1.JWT{JwksFile: tt.file}))
			if tt.want == "" {
				if err != nil || len(keys["p"]) != 1 || keys["p"][0].GetKid() != "h1" {
					t.Fatalf("%v %v", keys, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			for _, leak := range []string{"'r'", "root", "s3cr3t", "secret:"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("the error quotes the file: %v", err)
				}
			}
		})
	}
}

func TestNextRefresh(t *testing.T) {
	p := &policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{
		{Jwt: &policyv1.JWT{JwksUrl: "https://a"}},
		{Jwt: &policyv1.JWT{JwksUrl: "https://b", JwksRefresh: durationpb.New(time.Minute)}},
	}}
	if got := NextRefresh(p); got != time.Minute {
		t.Errorf("NextRefresh = %v", got)
	}
	if NextRefresh(&policyv1.Policy{}) != 0 {
		t.Error("no URL: want 0")
	}
}

// TestFailedRefreshKeepsKeysAndIsReported: a key source that fails after
// a good read keeps serving its last good keys, and the failure is counted
// in the metrics and kept, with the last success, for the admin API.
func TestFailedRefreshKeepsKeysAndIsReported(t *testing.T) {
	for _, kind := range []string{KindFile, KindURL} {
		t.Run(kind, func(t *testing.T) {
			var broken atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if broken.Load() {
					http.Error(w, "down", http.StatusBadGateway)
					return
				}
				w.Write([]byte(`{"keys":[` + ecKey + `]}`))
			}))
			defer srv.Close()
			file := filepath.Join(t.TempDir(), "jwks.json")
			write := func(doc string) {
				if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(`{"keys":[` + ecKey + `]}`)
			jwt := &policyv1.JWT{JwksFile: file}
			location := file
			if kind == KindURL {
				jwt, location = &policyv1.JWT{JwksUrl: srv.URL, JwksRefresh: durationpb.New(time.Minute)}, srv.URL
			}
			p := policyWith(jwt)
			reg := prometheus.NewRegistry()
			r := NewResolver(srv.Client(), nil, reg)
			r.ConfineFiles(filepath.Dir(file))
			clock := time.Unix(1_700_000_000, 0)
			r.now = func() time.Time { return clock }
			ctx := context.Background()
			if keys, err := r.Resolve(ctx, p); err != nil || len(keys["p"]) != 1 {
				t.Fatalf("first read: %v %v", keys, err)
			}
			good := clock
			clock = clock.Add(2 * time.Minute)
			broken.Store(true)
			write(`{"keys":[`)
			keys, err := r.Resolve(ctx, p)
			if err != nil || len(keys["p"]) != 1 || keys["p"][0].GetKid() != "ec1" {
				t.Fatalf("a failed refresh must keep the last good keys: %v %v", keys, err)
			}
			st := r.Sources(p)
			if len(st) != 1 || st[0].Kind != kind || st[0].Location != location || st[0].Keys != 1 ||
				!st[0].LastSuccess.Equal(good) || !st[0].LastErrorAt.Equal(clock) || st[0].LastError == "" {
				t.Errorf("status %+v", st)
			}
			if got := testutil.ToFloat64(r.metrics.failures.WithLabelValues(location)); got != 1 {
				t.Errorf("failures counted: %v, want 1", got)
			}
			if got := testutil.ToFloat64(r.metrics.lastSuccess.WithLabelValues(location)); got != float64(good.Unix()) {
				t.Errorf("last success gauge: %v", got)
			}
			// A set that never read is an error, and its status says why.
			fresh := NewResolver(srv.Client(), nil, nil)
			fresh.ConfineFiles(filepath.Dir(file))
			if _, err := fresh.Resolve(ctx, p); err == nil {
				t.Error("a source never read successfully must be an error")
			}
			if st := fresh.Sources(p); len(st) != 1 || !st[0].LastSuccess.IsZero() || st[0].LastError == "" {
				t.Errorf("never read: %+v", st)
			}
		})
	}
}

// TestResolveSkipsKidsUsedTwice: a kid the policy's own keys (or an
// earlier source) use is not served twice: the filter would refuse the
// whole policy for it.
func TestResolveSkipsKidsUsedTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(path, []byte(`{"keys":[`+ecKey+`,`+hmacKey+`]}`), 0o600)
	inline := &policyv1.JWK{Kty: "oct", Kid: "h1", Alg: "HS256", K: "ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"}
	keys, err := confined(filepath.Dir(path)).Resolve(context.Background(), policyWith(&policyv1.JWT{Keys: []*policyv1.JWK{inline}, JwksFile: path}))
	if err != nil || len(keys["p"]) != 1 || keys["p"][0].GetKid() != "ec1" {
		t.Fatalf("%v %v", keys, err)
	}
}

// TestFetchRefusesRedirectsOffHTTPS: a key set URL that redirects to plain
// http off loopback is a failed read, not keys fetched in the clear.
func TestFetchRefusesRedirectsOffHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "http://keys.example.com/jwks.json", http.StatusFound)
			return
		}
		w.Write([]byte(`{"keys":[` + ecKey + `]}`))
	}))
	defer srv.Close()
	r := NewResolver(srv.Client(), nil, nil)
	if _, err := r.Resolve(context.Background(), policyWith(&policyv1.JWT{JwksUrl: srv.URL + "/moved"})); err == nil ||
		!strings.Contains(err.Error(), `redirected: "http://keys.example.com/jwks.json": http is allowed on loopback only`) {
		t.Errorf("a redirect to plain http: %v", err)
	}
	if keys, err := r.Resolve(context.Background(), policyWith(&policyv1.JWT{JwksUrl: srv.URL + "/jwks"})); err != nil || len(keys["p"]) != 1 {
		t.Errorf("no redirect: %v %v", keys, err)
	}
}

// TestDefaultClientRefusesInternalTargets: the default client checks the
// address it dials, after name resolution, so no host name leads the
// control plane to a metadata service.
func TestDefaultClientRefusesInternalTargets(t *testing.T) {
	r := NewResolver(nil, nil, nil)
	for _, u := range []string{"https://169.254.169.254/keys", "https://[fd00:ec2::254]/keys", "https://0.0.0.0:1/keys"} {
		_, err := r.fetch(context.Background(), u)
		if err == nil || !strings.Contains(err.Error(), "refusing to fetch keys") {
			t.Errorf("%s: %v, want a refusal", u, err)
		}
	}
}

package jwks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

const ecKey = `{"kty":"EC","kid":"ec1","alg":"ES256","use":"sig","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`
const hmacKey = `{"kty":"oct","kid":"h1","alg":"HS256","k":"ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"}`

func TestParse(t *testing.T) {
	tests := []struct {
		name, doc string
		keys      int
		err       string
	}{
		{"two keys", `{"keys":[` + ecKey + `,` + hmacKey + `]}`, 2, ""},
		{"encryption key skipped", `{"keys":[` + ecKey + `,{"kty":"RSA","use":"enc","n":"x","e":"AQAB"}]}`, 1, ""},
		{"invalid key", `{"keys":[{"kty":"EC","alg":"ES256","crv":"P-256","x":"AA","y":"AA"}]}`, 0, "keys[0]"},
		{"empty", `{"keys":[]}`, 0, "no signing key"},
		{"garbage", `<html>`, 0, "not a JWKS document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := Parse([]byte(tt.doc))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || len(keys) != tt.keys {
				t.Fatalf("%d keys, %v", len(keys), err)
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
	r := NewResolver(srv.Client())
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
	if _, err := NewResolver(srv.Client()).Resolve(ctx, p); err == nil {
		t.Error("a URL never fetched successfully must be an error")
	}
}

func TestResolveFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(path, []byte(`{"keys":[`+hmacKey+`]}`), 0o644)
	keys, err := NewResolver(nil).Resolve(context.Background(), policyWith(&policyv1.JWT{JwksFile: path}))
	if err != nil || len(keys["p"]) != 1 || keys["p"][0].GetKid() != "h1" {
		t.Fatalf("%v %v", keys, err)
	}
	if _, err := NewResolver(nil).Resolve(context.Background(), policyWith(&policyv1.JWT{JwksFile: path + ".missing"})); err == nil {
		t.Error("a missing file must be an error")
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

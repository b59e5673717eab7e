package jwks

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// fakeShared is the replicas' shared store of fetched documents.
type fakeShared struct {
	leading bool
	docs    map[string][]byte
	stores  int
}

func (f *fakeShared) Leading() bool { return f.leading }
func (f *fakeShared) Fetched(_ context.Context, u string) ([]byte, bool, error) {
	d, ok := f.docs[u]
	return d, ok, nil
}
func (f *fakeShared) StoreFetched(_ context.Context, u string, doc []byte) error {
	f.docs[u] = doc
	f.stores++
	return nil
}

// TestSharedKeySets: a replica that does not lead serves the stored
// document and never fetches one that is stored; the leader fetches and
// stores only what changed; a URL nobody stored yet is fetched once and
// stored.
func TestSharedKeySets(t *testing.T) {
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		fmt.Fprintf(w, `{"keys":[%s]}`, hmacKey)
	}))
	defer srv.Close()
	u := srv.URL + "/jwks.json"
	p := &policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "a", Jwt: &policyv1.JWT{JwksUrl: u}}}}
	stored := []byte(`{"keys":[` + ecKey + `]}`)
	tests := []struct {
		name        string
		leading     bool
		docs        map[string][]byte
		wantFetches int32
		wantStores  int
		wantKid     string
	}{
		{name: "follower serves the stored document", docs: map[string][]byte{u: stored}, wantKid: "ec1"},
		{name: "follower fetches a URL nobody stored", docs: map[string][]byte{}, wantFetches: 1, wantStores: 1, wantKid: "h1"},
		{name: "leader fetches and stores a change", leading: true, docs: map[string][]byte{u: stored}, wantFetches: 1, wantStores: 1, wantKid: "h1"},
		{name: "leader stores nothing unchanged", leading: true, docs: map[string][]byte{u: []byte(`{"keys":[` + hmacKey + `]}`)}, wantFetches: 1, wantKid: "h1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fetches.Store(0)
			sh := &fakeShared{leading: tc.leading, docs: tc.docs}
			r := NewResolver(nil, nil, nil)
			r.Share(sh)
			keys, err := r.Resolve(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys["a"]; len(got) != 1 || got[0].GetKid() != tc.wantKid {
				t.Errorf("keys %v, want kid %s", got, tc.wantKid)
			}
			if fetches.Load() != tc.wantFetches || sh.stores != tc.wantStores {
				t.Errorf("%d fetches and %d stores, want %d and %d", fetches.Load(), sh.stores, tc.wantFetches, tc.wantStores)
			}
		})
	}
}

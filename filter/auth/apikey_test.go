package auth

import (
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

func TestAPIKeys(t *testing.T) {
	doc := `{"sources":[{"header":"X-API-Key"}],"identity_header":"x-id","api_keys":[` +
		`{"sha256":"` + apiKeyHash("first") + `","identity":"one"},` +
		`{"sha256":"` + apiKeyHash("second") + `","identity":"two"}]}`
	cfg, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"first": "one", "second": "two", "third": "", "a.b.c": ""} {
		d, _ := cfg.Check("", Request{Header: headers("x-api-key", key)}, now)
		if d.Identity != want || d.Allow != (want != "") {
			t.Errorf("key %q: %+v", key, d)
		}
		if want == "" && d.Reason != contract.ReasonUnknownAPIKey {
			t.Errorf("key %q: reason %s", key, d.Reason)
		}
	}
}

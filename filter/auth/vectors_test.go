package auth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestRFC7515ES256 verifies the ECDSA P-256 example of RFC 7515 appendix
// A.3 through the whole check (its key has no kid: the only key is used),
// at a time before the example's exp.
func TestRFC7515ES256(t *testing.T) {
	const token = "eyJhbGciOiJFUzI1NiJ9." +
		"eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ." +
		"DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
	cfg, err := ParseConfig([]byte(`{"routes":{"r":"p"},"policies":{"p":{"sources":[{"bearer":true}],"jwks":{"keys":[` +
		`{"kty":"EC","alg":"ES256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Header: headers("authorization", "Bearer "+token)}
	if d, _ := cfg.Check("r", req, time.Unix(1300819300, 0)); !d.Allow {
		t.Errorf("RFC 7515 A.3 does not verify: %+v", d)
	}
	tampered := token[:len(token)-2] + "AA"
	if d, _ := cfg.Check("r", Request{Header: headers("authorization", "Bearer "+tampered)}, time.Unix(1300819300, 0)); d.Allow {
		t.Error("a changed signature verified")
	}
}

// TestRFC8037Ed25519 checks that the Ed25519 key of RFC 8037 appendix A,
// parsed from its JWK, verifies the example JWS of A.4. Its payload is not
// a JWT, so the signature is checked without the claim rules.
func TestRFC8037Ed25519(t *testing.T) {
	k, err := parseJWK(JWK{Kty: "OKP", Alg: "EdDSA", Crv: "Ed25519", X: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
	if err != nil {
		t.Fatal(err)
	}
	const jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc." +
		"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
	i := strings.LastIndex(jws, ".")
	sig, err := base64.RawURLEncoding.DecodeString(jws[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	if err := jwt.SigningMethodEdDSA.Verify(jws[:i], sig, k.material); err != nil {
		t.Errorf("RFC 8037 A.4 does not verify: %v", err)
	}
	if err := jwt.SigningMethodEdDSA.Verify(jws[:i]+"x", sig, k.material); err == nil {
		t.Error("a changed payload verified")
	}
}

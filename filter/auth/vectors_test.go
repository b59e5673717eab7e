package auth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

// rfcPayload is the JWT claims set that RFC 7515's examples sign:
// iss "joe", exp 1300819380 (2011-03-22T18:43:00Z).
const rfcPayload = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"

// TestRFC7515Examples verifies the public-key examples of RFC 7515
// appendix A through the whole check (their keys have no kid: the only key
// is used), at a time before the examples' exp: A.2 (RS256) and A.3
// (ES256). A.1 (HS256, also RFC 7519 §3.1's example) is TestRFC7515.
func TestRFC7515Examples(t *testing.T) {
	tests := []struct {
		name, jwk, token string
	}{
		{
			name: "A.2 RS256",
			jwk: `{"kty":"RSA","alg":"RS256","e":"AQAB","n":"` +
				"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7" +
				"OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ" + `"}`,
			token: "eyJhbGciOiJSUzI1NiJ9." + rfcPayload + "." +
				"cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4" +
				"BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv" +
				"hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw",
		},
		{
			name:  "A.3 ES256",
			jwk:   `{"kty":"EC","alg":"ES256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`,
			token: "eyJhbGciOiJFUzI1NiJ9." + rfcPayload + ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
		},
	}
	before := time.Unix(1300819300, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(`{"sources":[{"bearer":true}],"jwks":{"keys":[` + tt.jwk + `]}}`))
			if err != nil {
				t.Fatal(err)
			}
			check := func(token string, at time.Time) Decision {
				d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+token)}, at)
				return d
			}
			if d := check(tt.token, before); !d.Allow {
				t.Errorf("does not verify: %+v", d)
			}
			if d := check(tt.token[:len(tt.token)-2]+"AA", before); d.Allow {
				t.Error("a changed signature verified")
			}
			if d := check(tt.token, time.Unix(1300819380+3600, 0)); d.Reason != contract.ReasonExpiredToken {
				t.Errorf("an hour after exp: %+v, want %s", d, contract.ReasonExpiredToken)
			}
		})
	}
}

// TestRFC8037Ed25519 checks that the Ed25519 key of RFC 8037 appendix A,
// parsed from its JWK, verifies the example JWS of A.4. Its payload is not
// a JWT, so the signature is checked without the claim rules.
func TestRFC8037Ed25519(t *testing.T) {
	k, err := parseJWK(contract.JWK{Kty: "OKP", Alg: "EdDSA", Crv: "Ed25519", X: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
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

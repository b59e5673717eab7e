package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteFileKeepsSecretsPrivate: a policy that holds an HMAC key or
// API key hashes is written 0600 over a file others could read; one
// without keeps the file's permissions.
func TestWriteFileKeepsSecretsPrivate(t *testing.T) {
	public := strings.Replace(validPolicy, "keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi }]",
		"keys: [{ kty: EC, kid: e, alg: ES256, crv: P-256, x: f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU, y: x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0 }]", 1)
	apiKeys := strings.Replace(public, "    jwt:", "    api_keys: [{ sha256: 3590041a46a99e65ed5b929371a6e9ab008257f81558a53a7a9250a9ecf87e75, identity: a }]\n    jwt:", 1)
	for _, tt := range []struct {
		name, doc string
		want      os.FileMode
	}{
		{"hmac key", validPolicy, 0o600},
		{"api key hashes", apiKeys, 0o600},
		{"public keys only", public, 0o644},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(path, []byte(tt.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, 0o644)
			if _, err := WriteFile(path, p); err != nil {
				t.Fatal(err)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Mode().Perm(); got != tt.want {
				t.Errorf("mode %o, want %o", got, tt.want)
			}
			if open, _ := ReadableByOthers(path); open != (tt.want&0o077 != 0) {
				t.Errorf("ReadableByOthers = %v", open)
			}
		})
	}
}

package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key, the key with
// the given mode.
func writePair(t *testing.T, keyMode os.FileMode) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), keyMode)
	if err := os.Chmod(keyFile, keyMode); err != nil { // past the umask
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestLoadKeyPairRefusesKeysOthersMayUse: a private key readable by
// other users, or writable by its group, is refused with the fix in the
// error; the owner's modes and a group that may only read are accepted.
func TestLoadKeyPairRefusesKeysOthersMayUse(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		err  string
	}{
		{0o600, ""},
		{0o400, ""},
		{0o640, ""},
		{0o440, ""},
		{0o644, "has mode 0644"},
		{0o604, "has mode 0604"},
		{0o660, "has mode 0660"},
		{0o666, "chmod 600"},
	} {
		certFile, keyFile := writePair(t, tc.mode)
		_, err := LoadKeyPair(certFile, keyFile)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("mode %04o: %v", tc.mode, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("mode %04o: error %v, want %q", tc.mode, err, tc.err)
		}
	}
}

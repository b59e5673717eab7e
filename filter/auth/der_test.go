package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	"testing"
)

// TestSPKIMatchesX509: the hand-written key encodings are byte for byte
// what crypto/x509 writes.
func TestSPKIMatchesX509(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name string
		pub  any
		got  []byte
	}{
		{"RSA", &rsaKey.PublicKey, rsaSPKI(rsaKey.N.Bytes(), rsaKey.E)},
		{"RSA e=3", &rsa.PublicKey{N: rsaKey.N, E: 3}, rsaSPKI(rsaKey.N.Bytes(), 3)},
		{"P-256", &p256.PublicKey, ecSPKI("P-256", p256.X.FillBytes(make([]byte, 32)), p256.Y.FillBytes(make([]byte, 32)))},
		{"P-384", &p384.PublicKey, ecSPKI("P-384", p384.X.FillBytes(make([]byte, 48)), p384.Y.FillBytes(make([]byte, 48)))},
	}
	for _, tt := range tests {
		want, err := x509.MarshalPKIXPublicKey(tt.pub)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tt.got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, tt.got, want)
		}
	}
}

// TestECDSADER: a JWS signature turned into DER verifies with
// ecdsa.VerifyASN1, whatever the leading bytes of r and s (a high bit
// needs a zero byte, leading zeros must go).
func TestECDSADER(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("signed"))
	for i := range 200 {
		r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], ecdsaDER(sig, 32)) {
			t.Fatalf("signature %d (%x) does not verify in DER", i, sig)
		}
	}
	zero := make([]byte, 64)
	if got := ecdsaDER(zero, 32); !bytes.Equal(got, []byte{0x30, 6, 2, 1, 0, 2, 1, 0}) {
		t.Errorf("zero r and s: %x", got)
	}
	if got := derUint(new(big.Int).Lsh(big.NewInt(1), 1100).Bytes()); got[1] != 0x81 || got[2] != 138 {
		t.Errorf("a 138-byte integer: %x", got[:4])
	}
}

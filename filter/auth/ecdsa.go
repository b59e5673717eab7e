//go:build !wasip1

package auth

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
)

// Outside Wasm (the control plane's policy checks, the tests) Go's own
// ECDSA checks points and signatures. The module leaves it out: see
// ecdsa_wasip1.go.

// onCurve reports whether an uncompressed point is on alg's curve.
func onCurve(alg string, point []byte) bool {
	c := ecdh.P256()
	if alg == "ES384" {
		c = ecdh.P384()
	}
	_, err := c.NewPublicKey(point)
	return err == nil
}

// verifyECDSA checks a DER signature over digest with an uncompressed
// point on alg's curve.
func verifyECDSA(alg string, point, digest, der []byte) bool {
	c := elliptic.P256()
	if alg == "ES384" {
		c = elliptic.P384()
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(c, point)
	return err == nil && ecdsa.VerifyASN1(pub, digest, der)
}

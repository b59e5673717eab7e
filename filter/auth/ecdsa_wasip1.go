//go:build wasip1

package auth

// In the module, ES256 and ES384 signatures are Envoy's to check (its
// verify_signature foreign function, BoringSSL): Go's NIST curves are
// half a megabyte of the module's code, and every byte of code costs
// Envoy memory and load time (V8 compiles it for every Envoy). A host that
// cannot check refuses the token rather than fall back.

// onCurve accepts every point: the control plane has already run the
// same parser natively over every configuration it sends, refusing a point
// off its curve, and BoringSSL checks the point again when it verifies.
func onCurve(string, []byte) bool { return true }

// verifyECDSA is reached only when the host could not check.
func verifyECDSA(string, []byte, []byte, []byte) bool { return false }

package auth

// DER encodings for a host that verifies signatures itself (see
// HostVerifier): a public key as a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7)
// and an ECDSA signature as the ASN.1 SEQUENCE of r and s (RFC 3279
// §2.2.3). Hand-written, since encoding/asn1 and crypto/x509 are large
// for a few fixed shapes.

var (
	oidRSAEncryption = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01}
	oidECPublicKey   = []byte{0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}
	oidP256          = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidP384          = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
	derNull          = []byte{0x05, 0x00}
)

// derTLV is one DER element: a tag, a definite length and the body.
func derTLV(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := []byte{tag}
	switch {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 0x100:
		out = append(out, 0x81, byte(n))
	case n < 0x10000:
		out = append(out, 0x82, byte(n>>8), byte(n))
	default:
		out = append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// derUint is a non-negative INTEGER from big-endian bytes, minimally
// encoded.
func derUint(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) == 0 {
		b = []byte{0}
	}
	if b[0]&0x80 != 0 {
		return derTLV(0x02, []byte{0}, b)
	}
	return derTLV(0x02, b)
}

// rsaSPKI is an RSA public key's SubjectPublicKeyInfo.
func rsaSPKI(n []byte, e int) []byte {
	eb := []byte{byte(e >> 24), byte(e >> 16), byte(e >> 8), byte(e)}
	key := derTLV(0x30, derUint(n), derUint(eb))
	return derTLV(0x30, derTLV(0x30, oidRSAEncryption, derNull), derTLV(0x03, []byte{0}, key))
}

// ecSPKI is an uncompressed P-256 or P-384 point's SubjectPublicKeyInfo.
func ecSPKI(curve string, x, y []byte) []byte {
	oid := oidP256
	if curve == "P-384" {
		oid = oidP384
	}
	return derTLV(0x30, derTLV(0x30, oidECPublicKey, oid), derTLV(0x03, []byte{0, 4}, x, y))
}

// ecdsaDER turns a JWS ECDSA signature (r and s, each size bytes) into
// the DER form.
func ecdsaDER(sig []byte, size int) []byte {
	return derTLV(0x30, derUint(sig[:size]), derUint(sig[size:]))
}

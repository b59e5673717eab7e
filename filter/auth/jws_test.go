package auth

import (
	"bytes"
	"crypto/hmac"
	"testing"
)

func TestHMACSumMatchesCryptoHMAC(t *testing.T) {
	msg := []byte("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9")
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		_, newHash := hashOf(alg)
		for n := 0; n <= 200; n += 7 {
			key := bytes.Repeat([]byte{byte(n)}, n)
			mac := hmac.New(newHash, key)
			mac.Write(msg)
			if got, want := hmacSum(newHash, key, msg), mac.Sum(nil); !bytes.Equal(got, want) {
				t.Errorf("%s, %d-byte key: %x, want %x", alg, n, got, want)
			}
		}
	}
}

// Command dp-token prints an HS256 token signed with the example policy's
// development secret, and nothing else, so that `TOKEN=$(make -s token)`
// works.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
)

func main() {
	secret := flag.String("secret-b64url", jwtmint.Secret, "HMAC secret, base64url")
	kid := flag.String("kid", jwtmint.KeyID, "key id (kid header)")
	sub := flag.String("sub", "demo-user", "subject claim")
	ttl := flag.Duration("ttl", time.Hour, "validity")
	flag.Parse()
	now := time.Now()
	tok, err := jwtmint.Mint(*secret, jwtmint.Claims{
		Subject: *sub, KeyID: *kid, IssuedAt: now, NotBefore: now, Expires: now.Add(*ttl),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dp-token:", err)
		os.Exit(1)
	}
	fmt.Println(tok)
}

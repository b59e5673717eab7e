package dpctl

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// apiKeyBytes is the randomness of a key dpctl makes: 256 bits, out of
// reach of guessing even though the policy holds an unsalted hash.
const apiKeyBytes = 32

// hashPrefix is how much of a key's hash `dpctl keys` shows: enough to
// tell keys apart, too little to stand for the hash.
const hashPrefix = 12

// apikeyNew prints a new API key and the policy line that holds its hash.
func (c *cli) apikeyNew(identity, auth string) error {
	raw := make([]byte, apiKeyBytes)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("make a key: %w", err)
	}
	key := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(key))
	hash := hex.EncodeToString(sum[:])
	line := fmt.Sprintf("- { sha256: %s, identity: %s }", hash, strconv.Quote(identity))
	if c.g.output != "table" {
		return c.printDoc(map[string]string{"key": key, "sha256": hash, "identity": identity, "policy_line": line})
	}
	where := "an auth policy's api_keys"
	if auth != "" {
		where = fmt.Sprintf("api_keys of auth policy %q", auth)
	}
	fmt.Fprintf(c.out, "key:    %s\n", key)
	fmt.Fprintf(c.out, "sha256: %s\n\n", hash)
	fmt.Fprintf(c.out, "Add this line to %s (the policy holds only the hash):\n  %s\n\n", where, line)
	fmt.Fprintln(c.out, "The key is shown only now: give it to the client, which sends it as its policy's token source says.")
	return nil
}

// apiKey is one API key as `dpctl keys` shows it.
type apiKey struct {
	AuthPolicy   string `json:"auth_policy"`
	Identity     string `json:"identity"`
	SHA256Prefix string `json:"sha256_prefix"`
}

// apiKeys lists the API keys of every auth policy: identity and a prefix
// of the hash, never more.
func apiKeys(p *policyv1.Policy) []apiKey {
	var out []apiKey
	for _, a := range p.GetAuthPolicies() {
		for _, k := range a.GetApiKeys() {
			out = append(out, apiKey{AuthPolicy: a.GetName(), Identity: k.GetIdentity(), SHA256Prefix: short12(k.GetSha256())})
		}
	}
	return out
}

func printAPIKeys(w io.Writer, keys []apiKey) error {
	if len(keys) == 0 {
		_, err := fmt.Fprintln(w, "no auth policy has api_keys")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AUTH POLICY\tIDENTITY\tSHA256")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s…\n", k.AuthPolicy, k.Identity, k.SHA256Prefix)
	}
	return tw.Flush()
}

func short12(h string) string {
	if len(h) > hashPrefix {
		return h[:hashPrefix]
	}
	return h
}

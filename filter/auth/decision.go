package auth

import (
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// Decision is the outcome of a check and what to do to the request.
type Decision struct {
	Allow    bool
	Status   int // 401 or 403; 500 or 503 when the filter cannot check
	Reason   string
	Identity string
	// Remove lists headers to delete before forwarding: every token source
	// and every identity header a client might try to spoof.
	Remove []string
	// Set lists verified identity headers to add after Remove.
	Set [][2]string
	// Path, when not empty, replaces :path (the token query parameter
	// removed).
	Path string
	// Cache says whether a JWT's decision came from the token cache.
	Cache CacheResult
	// Until is how long a host may reuse an allow for the same request
	// under the same configuration: for a JWT from the token cache, when
	// its cache entry ends (the earlier of the token's exp and the cache's
	// maximum age); for an API key, the cache's maximum age from now.
	// Zero (a JWT just verified, or the token cache off): not at all.
	Until time.Time
}

// Denial is the decision that refuses a handshake for reason, with the
// reason's status.
func Denial(reason string) Decision {
	return Decision{Status: contract.Status(reason), Reason: reason}
}

// Internal is the decision when the filter cannot carry out an allow (the
// host refused to strip the token): the request must not go on with it.
func Internal() Decision { return Denial(contract.ReasonInternal) }

// NotConfigured is the decision for a stream whose plugin has no valid
// configuration: nothing can be verified, so nothing passes.
func NotConfigured() Decision { return Denial(contract.ReasonNotConfigured) }

// Challenges reports whether the denial carries a WWW-Authenticate
// challenge: every 401, and the 403 for a missing scope (RFC 6750 §3.1).
func (d Decision) Challenges() bool {
	return !d.Allow && contract.Challenges(d.Reason)
}

// WWWAuthenticate is the challenge for a 401 (RFC 6750 §3). The realm was
// checked by ParseConfig to need no escaping.
func (d Decision) WWWAuthenticate(realm string) string {
	if d.Reason == contract.ReasonScope {
		return `Bearer realm="` + realm + `", error="insufficient_scope"`
	}
	if d.Reason == contract.ReasonMissingToken {
		return `Bearer realm="` + realm + `"`
	}
	return `Bearer realm="` + realm + `", error="invalid_token"`
}

// Body is the JSON body of a denial: the reason and a sentence, never the
// token.
func (d Decision) Body() []byte { return contract.Body(d.Reason) }

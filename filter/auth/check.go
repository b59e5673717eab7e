package auth

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/directpipe/directpipe/filter/contract"
)

// UnnamedRoute is the route argument of Check for a matched route that has
// no name. No route map can name it, so a routed configuration refuses it.
const UnnamedRoute = "\x00unnamed"

// Check decides a handshake on a route at time now. The policy is nil for a
// public or unknown route.
//
// A single-policy configuration guards every request whatever its route.
// With a route map, an empty route means no route matched: the router
// answers 404 itself. Every route the control plane makes has a name.
// Without a route map (what the control plane sends: its routes with auth
// name their policy in their metadata, see CheckTagged), a route is
// public.
//
// Every request let through, on a public route or none, loses the
// client's copies of every identity and claim header any policy sets: a
// back end must be able to trust them whichever route brought the
// request.
func (c *Config) Check(route string, req Request, now time.Time) (Decision, *Policy) {
	if c.single != nil {
		return c.single.Check(req, now), c.single
	}
	public := Decision{Allow: true, Remove: c.protected}
	if route == "" || c.routes == nil {
		// No route matched, or the routes name their policies in their
		// metadata (CheckTagged) and this one names none.
		return public, nil
	}
	name, known := c.routes[route]
	if !known || route == UnnamedRoute {
		return Denial(contract.ReasonRouteNotAllowed), nil
	}
	if name == "" {
		return public, nil
	}
	p := c.policies[name]
	return p.Check(req, now), p
}

// CheckTagged decides a handshake on a route whose metadata names its
// auth policy (contract.RouteMetadataPolicy): policy is that name, ""
// for a public route. The control plane tags every HTTP route with auth,
// so a route and its auth setting arrive together; a policy this
// configuration does not hold yet (it comes by ECDS, which may lag RDS)
// fails closed. A single-policy configuration still guards every request.
func (c *Config) CheckTagged(policy string, req Request, now time.Time) (Decision, *Policy) {
	if c.single != nil {
		return c.single.Check(req, now), c.single
	}
	if policy == "" {
		return Decision{Allow: true, Remove: c.protected}, nil
	}
	p := c.policies[policy]
	if p == nil {
		return Denial(contract.ReasonRouteNotAllowed), nil
	}
	return p.Check(req, now), p
}

// Check verifies the request's origin, then its token, against the policy.
// The origin comes first: a page on another site must not even learn
// whether a browser's ambient token would have worked.
func (p *Policy) Check(req Request, now time.Time) Decision {
	if p.Public {
		return Decision{Allow: true, Remove: p.protected()}
	}
	if d, ok := p.checkOrigin(req); !ok {
		return d
	}
	token, strip := p.find(req)
	if strip.ambiguous {
		// Two token entries: a back end or another proxy could take the
		// one that was not checked.
		return Denial(contract.ReasonMalformedToken)
	}
	if token == "" {
		return Denial(contract.ReasonMissingToken)
	}
	if len(token) > p.MaxTokenBytes {
		return Denial(contract.ReasonTokenTooLarge)
	}
	var d Decision
	// A JWS compact token always has dots; API keys are opaque strings
	// without them.
	if strings.Contains(token, ".") && len(p.keys) > 0 {
		d = p.verifyJWT(token, now)
	} else {
		d = p.verifyAPIKey(token)
		if d.Allow && p.reuse > 0 {
			// An API key's allow depends on the configuration alone; it
			// may be reused as long as a cached token's.
			d.Until = now.Add(p.reuse)
		}
	}
	if !d.Allow {
		return d
	}
	d.Remove = append(d.Remove, strip.headers...)
	d.Set = append(d.Set, strip.set...)
	d.Path = strip.path
	return d
}

// HeaderSafe reports whether an identity or claim value may be forwarded
// as it is: valid UTF-8 without U+FFFD (the JSON reader's stand-in for
// bytes that were not UTF-8, so another reader may see other bytes),
// every character printable (no control, format or bidi character, no
// space but U+0020), and no space at either end.
// Such a value is refused, never rewritten: "ad\x00min" or "admin " must
// not become the identity admin, and a back end, a log or an operator's
// screen must read the same name the token carried.
func HeaderSafe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
	}
	return !strings.HasPrefix(s, " ") && !strings.HasSuffix(s, " ")
}

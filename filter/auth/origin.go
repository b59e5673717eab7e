package auth

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/directpipe/directpipe/filter/contract"
)

// prepareOrigins reads the allowlist of origins.
func (p *Policy) prepareOrigins() error {
	if p.Origins == nil {
		return nil
	}
	for i, a := range p.Origins.Allow {
		m, err := parseOrigin(a)
		if err != nil {
			return fmt.Errorf("origins.allow[%d]: %w", i, err)
		}
		p.origins = append(p.origins, m)
	}
	return nil
}

// originMatcher is one allowed origin: a scheme and a host (with port), or
// a scheme and a domain whose subdomains, at any depth, are allowed.
type originMatcher struct {
	scheme   string
	host     string // lower case, with :port when one is given
	wildcard bool   // host is a domain: ".example.com"
}

func parseOrigin(s string) (originMatcher, error) {
	scheme, host, ok := strings.Cut(strings.ToLower(s), "://")
	if !ok || (scheme != "http" && scheme != "https") || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return originMatcher{}, fmt.Errorf("%q is not scheme://host[:port]", s)
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if rest == "" || strings.Contains(rest, "*") {
			return originMatcher{}, fmt.Errorf("%q: a wildcard needs a domain", s)
		}
		return originMatcher{scheme: scheme, host: "." + rest, wildcard: true}, nil
	}
	if strings.Contains(host, "*") {
		return originMatcher{}, fmt.Errorf("%q: only a leading *. is allowed", s)
	}
	return originMatcher{scheme: scheme, host: host}, nil
}

// matches compares an Origin header value (RFC 6454 serialisation).
func (m originMatcher) matches(origin string) bool {
	u, err := url.Parse(strings.ToLower(origin))
	if err != nil || u.Scheme != m.scheme || u.Host == "" || u.Path != "" || u.User != nil {
		return false
	}
	if m.wildcard {
		return strings.HasSuffix(u.Host, m.host) && len(u.Host) > len(m.host)
	}
	return u.Host == m.host
}

func (p *Policy) checkOrigin(req Request) (Decision, bool) {
	if p.Origins == nil {
		return Decision{}, true
	}
	origin, ok := req.Header("origin")
	if !ok || origin == "" {
		if p.Origins.AllowMissing {
			return Decision{}, true
		}
		return Denial(contract.ReasonOriginMissing), false
	}
	for _, m := range p.origins {
		if m.matches(origin) {
			return Decision{}, true
		}
	}
	return Denial(contract.ReasonOriginDenied), false
}

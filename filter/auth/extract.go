package auth

import (
	"net/url"
	"strings"
)

// Request is what the check reads of the handshake. Header returns the
// value of a lower-case header name and whether it is present; it is a
// function so the filter asks the host only for the headers a policy names.
// Path is the request target; left empty, it is read as Header(":path"),
// and only by a policy with a query token source: a host that keys a
// decision on the headers the check read must not key a public route's
// on every distinct path.
type Request struct {
	Path   string
	Header func(name string) (string, bool)
}

// path returns the request target.
func (r Request) path() string {
	if r.Path != "" {
		return r.Path
	}
	p, _ := r.Header(":path")
	return p
}

type stripping struct {
	headers []string
	set     [][2]string // headers rewritten without the token
	path    string
	// ambiguous: one source holds two tokens, and the handshake is
	// refused.
	ambiguous bool
}

// cutSubprotocol removes every Sec-WebSocket-Protocol entry with the
// prefix, keeping the others in order, and returns the first token and
// how many entries had the prefix.
func cutSubprotocol(header, prefix string) (token, rest string, n int) {
	var kept []string
	for entry := range strings.SplitSeq(header, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if t, ok := strings.CutPrefix(entry, prefix); ok {
			if n == 0 {
				token = t
			}
			n++
			continue
		}
		kept = append(kept, entry)
	}
	return token, strings.Join(kept, ", "), n
}

// find returns the first token in source order, and what to strip so that
// no token from any configured source is forwarded upstream.
func (p *Policy) find(req Request) (string, stripping) {
	var token string
	var s stripping
	for _, src := range p.Sources {
		var v string
		switch {
		case src.Bearer:
			h, ok := req.Header("authorization")
			if !ok {
				continue
			}
			s.headers = append(s.headers, "authorization")
			scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
			if strings.EqualFold(scheme, "bearer") {
				v = strings.TrimSpace(rest)
			}
		case src.Header != "":
			h, ok := req.Header(src.Header)
			if !ok {
				continue
			}
			s.headers = append(s.headers, src.Header)
			v = strings.TrimSpace(h)
		case src.SubprotocolPrefix != "":
			h, ok := req.Header("sec-websocket-protocol")
			if !ok {
				continue
			}
			val, rest, n := cutSubprotocol(h, src.SubprotocolPrefix)
			if n == 0 {
				continue
			}
			s.ambiguous = s.ambiguous || n > 1
			if rest == "" {
				s.headers = append(s.headers, "sec-websocket-protocol")
			} else {
				s.set = append(s.set, [2]string{"sec-websocket-protocol", rest})
			}
			v = val
		case src.Query != "":
			path := s.path
			if path == "" {
				path = req.path()
			}
			val, rest, n := cutQueryParam(path, src.Query)
			if n == 0 {
				continue
			}
			s.ambiguous = s.ambiguous || n > 1
			s.path = rest
			v = val
		}
		if token == "" {
			token = v
		}
	}
	s.headers = append(s.headers, p.protected()...)
	return token, s
}

// cutQueryParam removes every occurrence of a query parameter from a path,
// keeping the others byte for byte and in order, and returns the first
// value and how many times the parameter was there.
func cutQueryParam(path, name string) (value, rest string, n int) {
	base, query, ok := strings.Cut(path, "?")
	if !ok {
		return "", path, 0
	}
	var kept []string
	for part := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == name {
			if n == 0 {
				value, _ = url.QueryUnescape(v)
			}
			n++
			continue
		}
		kept = append(kept, part)
	}
	if n == 0 {
		return "", path, 0
	}
	if len(kept) == 0 {
		return value, base, n
	}
	return value, base + "?" + strings.Join(kept, "&"), n
}

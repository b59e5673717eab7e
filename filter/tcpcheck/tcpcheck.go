// Package tcpcheck is the logic of the tcp mode handshake module: it reads
// the WebSocket upgrade request from the first bytes of a connection,
// checks it with the same auth core as the HTTP module, and says what the
// network filter does with those bytes.
//
// A Proxy-Wasm network filter in Envoy cannot write to its client: the ABI
// can only rewrite the bytes going upstream and pick where they go. So a
// denial rewrites the request into a short one for Envoy's own deny
// listener and sends the connection there (the tcp_proxy cluster set per
// connection through filter state); that listener answers the raw
// HTTP/1.1 401 or 403, with the same body and challenge as the HTTP
// module, and closes. A denied caller never reaches the back end.
package tcpcheck

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/httphead"
)

// HeadTimeout is how long a connection may take to send its upgrade
// request before the module closes it. Until then it holds no upstream
// connection, only a little memory.
const HeadTimeout = 10 * time.Second

// Verdict is what the filter does with the bytes it has so far.
type Verdict int

const (
	// NeedMore: the head has not ended; keep the bytes, hold the
	// connection.
	NeedMore Verdict = iota
	// Allow: replace the first HeadLen bytes with Replacement, then pass
	// everything through untouched for the life of the connection.
	Allow
	// Deny: replace every byte received with Replacement and send the
	// connection to contract.DenyCluster.
	Deny
)

func (v Verdict) String() string {
	switch v {
	case NeedMore:
		return "need-more"
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "unknown"
}

// Outcome is the result of Inspect.
type Outcome struct {
	Verdict  Verdict
	Decision auth.Decision
	// HeadLen is the length of the request head in the bytes inspected.
	HeadLen int
	// Replacement is the rewritten head (Allow) or the deny request (Deny).
	Replacement []byte
}

// Inspect decides a connection from the bytes it has sent so far. The
// policy guards the whole listener: a tcp route has no route table.
func Inspect(p *auth.Policy, buf []byte, now time.Time) Outcome {
	return InspectScanned(p, &httphead.Scanner{}, buf, now)
}

// InspectScanned is Inspect for a connection whose bytes arrive in pieces:
// s has read the earlier pieces of buf and reads only what is new.
func InspectScanned(p *auth.Policy, s *httphead.Scanner, buf []byte, now time.Time) Outcome {
	h, n, err := s.Scan(buf)
	switch {
	case errors.Is(err, httphead.ErrIncomplete):
		return Outcome{Verdict: NeedMore}
	case err != nil:
		return deny(auth.Denial(contract.ReasonBadHandshake), p.Realm)
	case !isUpgrade(h) || n != len(buf):
		// Only the upgrade request is checked; anything after it on the
		// connection passes unread. A body, or bytes sent before the
		// server's 101 (RFC 6455 §4.1 forbids them), could be a second
		// request that was never checked.
		return deny(auth.Denial(contract.ReasonBadHandshake), p.Realm)
	}
	req := auth.Request{
		Path:   h.Target,
		Header: h.Get,
	}
	d := p.Check(req, now)
	if !d.Allow {
		return deny(d, p.Realm)
	}
	for _, name := range d.Remove {
		h.Del(name)
	}
	if d.Path != "" {
		h.Target = d.Path
	}
	for _, kv := range d.Set {
		h.Set(kv[0], kv[1])
	}
	// Only this request is checked, and after the decision the module
	// reads nothing more. If the back end answers it without upgrading (a
	// path it does not serve, a refusal), the connection must end there,
	// or the next request on it would reach the back end unchecked: any
	// HTTP/1.1 server closes after answering a request that says close
	// (RFC 9112 §9.6). A 101 makes the connection a WebSocket, where the
	// header means nothing. The client's other tokens go too: one naming
	// a header would make that header hop-by-hop for a proxy behind us,
	// which could then drop the identity the module set.
	h.Set("connection", "Upgrade, close")
	return Outcome{Verdict: Allow, Decision: d, HeadLen: n, Replacement: h.Bytes()}
}

// isUpgrade accepts only a WebSocket opening handshake without a body
// (RFC 6455 §4.1): version 13 and a key of 16 random bytes in base64,
// each sent once, so that a back end is never handed something that is
// not a handshake it can finish.
func isUpgrade(h *httphead.Head) bool {
	_, hasLength := h.Get("content-length")
	_, hasEncoding := h.Get("transfer-encoding")
	return h.Method == "GET" && originForm(h.Target) && !hasLength && !hasEncoding &&
		onlyWebSocket(h.Values("upgrade")) && h.HasToken("connection", "upgrade") &&
		len(h.Values("host")) == 1 && len(h.Values("authorization")) <= 1 && len(h.Values("origin")) <= 1 &&
		validVersion(h.Values("sec-websocket-version")) && validKey(h.Values("sec-websocket-key")) &&
		!hasUnderscoreName(h)
}

// originForm accepts only a path and query as the request target (RFC
// 9112 §3.2.1). In absolute form (GET http://other/v1/voice) a back end
// takes the host from the target, while the module and the policy read
// Host; a fragment is never sent by a client and servers differ on
// where a path with one ends.
func originForm(target string) bool {
	return strings.HasPrefix(target, "/") && !strings.Contains(target, "#")
}

// onlyWebSocket accepts one Upgrade field naming websocket alone. A
// second protocol offered beside it (h2c, say) could be the one a back
// end switches to, and a multiplexed protocol would carry requests the
// module never sees.
func onlyWebSocket(v []string) bool {
	return len(v) == 1 && strings.EqualFold(v[0], "websocket")
}

func validVersion(v []string) bool { return len(v) == 1 && v[0] == "13" }

// validKey accepts one Sec-WebSocket-Key that is the base64 of 16 bytes.
func validKey(v []string) bool {
	if len(v) != 1 || len(v[0]) != 24 {
		return false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v[0])
	return err == nil && len(b) == 16
}

// hasUnderscoreName refuses header names with an underscore, as the HTTP
// listener does: many back ends read x_directpipe_identity as
// x-directpipe-identity, so a client could slip a spoofed identity past
// the check, which strips only the dashed names.
func hasUnderscoreName(h *httphead.Head) bool {
	for _, f := range h.Fields {
		if strings.Contains(f.Name, "_") {
			return true
		}
	}
	return false
}

func deny(d auth.Decision, realm string) Outcome {
	return Outcome{Verdict: Deny, Decision: d, Replacement: DenyRequest(d, realm)}
}

// DenyRequest is the request the deny listener answers for a denial. It
// names the reason in the path and carries the challenge; nothing of the
// client's request, and so none of its token, goes with it.
func DenyRequest(d auth.Decision, realm string) []byte {
	h := &httphead.Head{Method: "GET", Target: contract.DenyPathPrefix + d.Reason, Proto: "HTTP/1.1", Fields: []httphead.Field{
		{Name: "host", Value: contract.DenyListener},
		{Name: "connection", Value: "close"},
	}}
	if d.Challenges() {
		h.Fields = append(h.Fields, httphead.Field{Name: contract.ChallengeHeader, Value: d.WWWAuthenticate(realm)})
	}
	return h.Bytes()
}

// DenyResponse is the raw HTTP/1.1 answer to a denial, for a host that
// writes it to the client itself: the status, JSON body, challenge and
// Retry-After the deny listener answers DenyRequest with, and close.
func DenyResponse(d auth.Decision, realm string) []byte {
	status := contract.Status(d.Reason)
	body := contract.Body(d.Reason)
	var b strings.Builder
	b.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + statusText[status] + "\r\n")
	b.WriteString("content-type: application/json\r\n")
	if d.Challenges() {
		b.WriteString("www-authenticate: " + d.WWWAuthenticate(realm) + "\r\n")
	}
	if contract.RetryAfter(d.Reason) {
		b.WriteString("retry-after: " + strconv.Itoa(contract.RetryAfterSeconds) + "\r\n")
	}
	b.WriteString("content-length: " + strconv.Itoa(len(body)) + "\r\nconnection: close\r\n\r\n")
	b.Write(body)
	return []byte(b.String())
}

// statusText names the statuses a denial answers with (net/http is not
// worth its size in the Wasm module for five phrases).
var statusText = map[int]string{
	400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
	500: "Internal Server Error", 503: "Service Unavailable",
}

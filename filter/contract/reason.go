package contract

import (
	"encoding/json"
	"slices"
)

// Reason codes are stable: clients and dashboards match on them, and each
// names a metric (MetricDeniedPrefix and the code) and a route of the deny
// listener.
const (
	ReasonMissingToken    = "missing_token"
	ReasonTokenTooLarge   = "token_too_large"
	ReasonMalformedToken  = "malformed_token"
	ReasonBadSignature    = "bad_signature"
	ReasonExpiredToken    = "expired_token"
	ReasonNotYetValid     = "token_not_yet_valid"
	ReasonInvalidToken    = "invalid_token"
	ReasonUnknownAPIKey   = "unknown_api_key"
	ReasonRouteNotAllowed = "route_not_configured"
	ReasonInvalidIssuer   = "invalid_issuer"
	ReasonInvalidAudience = "invalid_audience"
	ReasonScope           = "insufficient_scope"
	ReasonOriginMissing   = "missing_origin"
	ReasonOriginDenied    = "origin_not_allowed"
	ReasonNotConfigured   = "filter_not_configured"
	ReasonInternal        = "internal_error"
	// ReasonRouteChanged: after the filter edited the request (token
	// stripped, identity set), the route whose policy was checked no
	// longer matches it. Envoy answers it (RouteChangedRoute), not the
	// module.
	ReasonRouteChanged = "route_changed"
	// ReasonBadHandshake is the tcp module's: the first bytes of the
	// connection are not a WebSocket upgrade request it can read.
	ReasonBadHandshake = "bad_handshake"
	// ReasonClientAddress: the client's address is on the route's deny
	// list, or not on its allow list.
	ReasonClientAddress = "client_address"
	// ReasonStreamQuota: the identity already holds as many live streams
	// as its quota allows.
	ReasonStreamQuota = "stream_quota"
	// ReasonHandshakeRate: the identity opened handshakes faster than its
	// rate allows.
	ReasonHandshakeRate = "handshake_rate"
)

// RetryAfterSeconds is the Retry-After of a 429: a stream quota frees
// when one of the identity's streams ends, which the module cannot
// foresee; a rate refills within a second.
const RetryAfterSeconds = 1

// denials gives each reason its status and the sentence of its body. It is
// never written.
var denials = map[string]struct {
	status  int
	message string
}{
	ReasonMissingToken:    {401, "a token is required"},
	ReasonTokenTooLarge:   {401, "the token is too large"},
	ReasonMalformedToken:  {401, "the token is malformed"},
	ReasonBadSignature:    {401, "the token signature does not verify"},
	ReasonExpiredToken:    {401, "the token has expired"},
	ReasonNotYetValid:     {401, "the token is not valid yet"},
	ReasonInvalidToken:    {401, "the token is not valid"},
	ReasonUnknownAPIKey:   {401, "the API key is not known"},
	ReasonInvalidIssuer:   {401, "the token's issuer is not accepted"},
	ReasonInvalidAudience: {401, "the token is not meant for this service"},
	ReasonScope:           {403, "the token lacks a required scope"},
	ReasonRouteNotAllowed: {403, "the route has no auth setting yet"},
	ReasonOriginMissing:   {403, "the request has no Origin"},
	ReasonOriginDenied:    {403, "the page's origin may not open streams here"},
	ReasonClientAddress:   {403, "the client's address may not open streams here"},
	ReasonStreamQuota:     {429, "the identity holds as many streams as its quota allows"},
	ReasonHandshakeRate:   {429, "the identity opens streams faster than its rate allows"},
	ReasonBadHandshake:    {400, "the upgrade request could not be read"},
	ReasonInternal:        {500, "the handshake could not be checked"},
	ReasonRouteChanged:    {500, "the request matched another route after it was checked"},
	ReasonNotConfigured:   {503, "the handshake filter has no configuration"},
}

// Reasons lists every reason code, sorted, so that a metric or a deny
// route can exist for each before the first denial.
func Reasons() []string {
	out := make([]string, 0, len(denials))
	for r := range denials {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Status is the HTTP status a denial for reason answers with: 401 or 403,
// 400 for an unreadable handshake, 500 or 503 when the filter cannot check.
func Status(reason string) int { return denials[reason].status }

// RetryAfter reports whether a denial for reason carries Retry-After:
// every 429.
func RetryAfter(reason string) bool { return Status(reason) == 429 }

// Challenges reports whether a denial for reason carries a
// WWW-Authenticate challenge: every 401, and the 403 for a missing scope
// (RFC 6750 §3.1).
func Challenges(reason string) bool {
	return Status(reason) == 401 || reason == ReasonScope
}

// Body is the JSON body of a denial: the reason and a sentence, never the
// token.
func Body(reason string) []byte {
	b, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{reason, denials[reason].message})
	return append(b, '\n')
}

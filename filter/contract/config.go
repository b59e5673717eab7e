package contract

// Config is the HTTP module's configuration as the control plane sends it:
// one ECDS resource for every route. The filter also accepts one bare
// Policy document, which then guards every route; the tcp module takes
// only that form.
type Config struct {
	// Routes maps every route name to its policy name, "" for a public
	// route. The filter denies a route it does not know, so a route that
	// reaches Envoy before its auth setting fails closed. The control
	// plane sends no route map: its routes carry their policy in their
	// metadata (RouteMetadataPolicy), and without a map a route without
	// that tag is public.
	Routes   map[string]string  `json:"routes,omitempty"`
	Policies map[string]*Policy `json:"policies"`
	// Clients maps a route name to the client addresses that may open
	// streams on it. A route that is not in it takes any client. It is
	// keyed by the name the module already reads for every handshake, so
	// a route with a list costs one property read (the client address)
	// and a route without one costs nothing.
	Clients map[string]*Clients `json:"clients,omitempty"`
}

// Clients is a route's client address allow and deny lists, as CIDRs
// ("10.0.0.0/8", "2001:db8::/32"). Deny wins; an empty allow list allows
// any address the deny list does not name. The address is the one Envoy
// sees for the downstream connection (its source.address), which the HCM
// takes from X-Forwarded-For when the listener trusts hops in front of it.
type Clients struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// MaxClientCIDRs bounds each of a route's client lists: the module scans
// them once per handshake, and a list is a few bytes of every worker's
// memory per entry.
const MaxClientCIDRs = 256

// Policy says where a token is found and how it is verified.
type Policy struct {
	Name          string   `json:"name"`
	Realm         string   `json:"realm"`
	Sources       []Source `json:"sources,omitempty"`
	JWKS          *JWKS    `json:"jwks,omitempty"`
	LeewaySeconds int64    `json:"leeway_seconds"`
	// MaxTokenLifetimeSeconds refuses a JWT whose exp is further ahead
	// than this (plus the leeway); 0 takes DefaultMaxTokenLifetimeSeconds.
	MaxTokenLifetimeSeconds int64             `json:"max_token_lifetime_seconds,omitempty"`
	MaxTokenBytes           int               `json:"max_token_bytes"`
	APIKeys                 []APIKey          `json:"api_keys,omitempty"`
	IdentityHeader          string            `json:"identity_header,omitempty"`
	ClaimHeaders            map[string]string `json:"claim_headers,omitempty"`
	// Public marks a policy that verifies no token: the tcp module then
	// only checks that the connection opens with a WebSocket handshake
	// and removes ProtectedHeaders from it (a tcp route without auth). It
	// has no sources and no keys.
	Public bool `json:"public,omitempty"`
	// ProtectedHeaders are identity and claim headers that other policies
	// set: a request this policy lets through must not carry a client's
	// copy of them either. The tcp module, which sees one policy, needs
	// them; the HTTP module also takes them from every policy of its
	// route map.
	ProtectedHeaders []string    `json:"protected_headers,omitempty"`
	Issuer           string      `json:"issuer,omitempty"`
	Audiences        []string    `json:"audiences,omitempty"`
	RequiredScopes   []string    `json:"required_scopes,omitempty"`
	Origins          *Origins    `json:"origins,omitempty"`
	TokenCache       *TokenCache `json:"token_cache,omitempty"`
	// Clients limits the client addresses in the one-policy form, where
	// the policy guards every route (the tcp module: one route per
	// plugin).
	Clients *Clients `json:"clients,omitempty"`
	// Quotas limits each verified identity's live streams and handshake
	// rate; nil means no limit.
	Quotas *Quotas `json:"quotas,omitempty"`
}

// Quotas are one policy's per-identity limits. The stream count is shared
// by every worker of an Envoy; the handshake rate too.
type Quotas struct {
	// MaxStreams is the live streams one identity may hold on this Envoy;
	// 0 means no limit.
	MaxStreams uint32 `json:"max_streams,omitempty"`
	// Identities replaces MaxStreams for the identities it names (tiers);
	// 0 means no limit for that identity.
	Identities map[string]uint32 `json:"identities,omitempty"`
	// Handshakes is a token bucket per identity; nil means no limit.
	Handshakes *Rate `json:"handshakes,omitempty"`
	// Split replaces MaxStreams and Identities for the identities it
	// names: the control plane's split of their quota by where their
	// streams are.
	Split map[string]*Split `json:"split,omitempty"`
}

// Split is one identity's stream quota on each Envoy, by node id; an
// Envoy it does not name admits Rest.
type Split struct {
	Rest  uint32            `json:"rest"`
	Nodes map[string]uint32 `json:"nodes,omitempty"`
}

// StreamLimit is the live streams identity may hold on the Envoy whose
// node id is node; 0 means no limit.
func (q *Quotas) StreamLimit(node, identity string) uint32 {
	if s, ok := q.Split[identity]; ok {
		if n, ok := s.Nodes[node]; ok {
			return n
		}
		return s.Rest
	}
	if n, ok := q.Identities[identity]; ok {
		return n
	}
	return q.MaxStreams
}

// Rate is a token bucket: PerSecond tokens a second, up to Burst.
type Rate struct {
	PerSecond uint32 `json:"per_second"`
	Burst     uint32 `json:"burst,omitempty"`
}

// QuotaOtherIdentity labels the refusals of identities past
// MaxIdentityMetrics.
const QuotaOtherIdentity = "other"

// Bounds of Quotas.
const (
	MaxStreamsPerIdentity  = 1_000_000
	MaxHandshakesPerSecond = 100_000
	MaxQuotaIdentities     = 10_000
	MaxIdentityBytes       = 256
	// MaxHeldStreams bounds the counted streams one worker remembers;
	// past it a stream under a quota is refused (stream_quota) rather
	// than let through uncounted.
	MaxHeldStreams = 100_000
	// MaxIdentityMetrics bounds the identities one worker gives refusal
	// counters of their own; later ones share QuotaOtherIdentity's.
	MaxIdentityMetrics = 32
	// MaxIdentityLabelBytes bounds an identity's part of a stat name.
	MaxIdentityLabelBytes = 64
	// QuotaSlots is the number of entries each of the two quota tables
	// (live streams, handshake buckets) may hold in an Envoy's shared
	// data; QuotaProbe the slots an identity may use, from its hash on.
	QuotaSlots = 4096
	QuotaProbe = 16
	// MaxIdentityGauges bounds the live-stream gauges an Envoy defines,
	// one per identity, for its lifetime (stats cannot be deleted);
	// later identities' streams are counted by MetricQuotaLiveUnlabelled.
	MaxIdentityGauges = 1000
	// MaxGaugeIdentityBytes: a longer identity gets no gauge.
	MaxGaugeIdentityBytes = 128
	// MaxSplitIdentities bounds the identities a policy's split names,
	// MaxSplitNodes the Envoys one identity's split names.
	MaxSplitIdentities = 1000
	MaxSplitNodes      = 1000
)

// TokenCache sizes the filter's cache of verified JWTs. A cached token
// skips the signature check until the earlier of its exp and MaxAgeSeconds
// after it was first verified; any configuration change empties the cache.
// Zero takes the filter's default (1,024 entries, 300 s), a negative value
// turns the cache off.
type TokenCache struct {
	MaxEntries    int   `json:"max_entries,omitempty"`
	MaxAgeSeconds int64 `json:"max_age_seconds,omitempty"`
}

// Bounds of TokenCache: a cache entry is a few hundred bytes of each
// worker's Wasm memory, which never shrinks.
const (
	MaxTokenCacheEntries = 65536
	MaxTokenCacheSeconds = 3600
)

// Source is one place a token may be; exactly one field is set.
type Source struct {
	Bearer bool   `json:"bearer,omitempty"`
	Query  string `json:"query,omitempty"`
	Header string `json:"header,omitempty"`
	// SubprotocolPrefix names a Sec-WebSocket-Protocol entry carrying the
	// token, as browsers must send it.
	SubprotocolPrefix string `json:"subprotocol_prefix,omitempty"`
}

// Origins is the allowlist of pages that may open streams: the defence
// against cross-site WebSocket hijacking.
type Origins struct {
	// Allow holds "https://app.example.com" or "https://*.example.com".
	Allow []string `json:"allow"`
	// AllowMissing lets requests without Origin through (non-browser
	// clients never send one).
	AllowMissing bool `json:"allow_missing"`
}

// JWKS is a JSON Web Key Set (RFC 7517).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one verification key; kty selects which fields carry it.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	K   string `json:"k,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// APIKey is the SHA-256 of a key, in hex, and the identity it stands for.
type APIKey struct {
	SHA256   string `json:"sha256"`
	Identity string `json:"identity"`
}

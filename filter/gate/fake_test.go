package gate

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fakeHost records what the gate asks of its host. Request headers are a
// map (lower-case names), downstream data a byte slice the gate may
// replace, and each err* field makes that call fail.
type fakeHost struct {
	config    []byte
	configErr error

	headers    map[string]string
	extra      [][2]string // more header lines, a name again among them
	route      string
	routeFound bool
	// routePolicy and routeTagged are the matched route's metadata.
	routePolicy string
	routeTagged bool
	edits       int
	local       *localReply

	data        []byte
	dataRead    int // bytes of data the module read, over every call
	tickMillis  uint32
	filterState map[string]string
	closed      []uint32 // contexts closed, by effective context
	effective   uint32
	// onClose, when set, runs inside CloseDownstream, as Envoy enters the
	// module again (proxy_on_delete) before the call
	// returns.
	onClose func(id uint32)

	// clientAddr is source.address; clientAddrs counts its reads.
	clientAddr    string
	clientAddrErr error
	clientAddrs   int

	rootID  string
	node    string
	defined map[string]bool
	counts  map[string]int
	logs    []string

	// sharedData is the Envoy's shared data; beforeSet, when set, runs
	// before each write, as another worker might.
	sharedData *sharedData
	// sharedReads counts SharedData calls.
	sharedReads int
	beforeSet   func(key string)
	errShared   error

	errHeaders, errRemove, errReplace, errLocal, errData, errReplaceData, errState, errEffective error
}

type localReply struct {
	status  int
	details string
	body    string
	headers map[string]string
}

func newFakeHost(config string) *fakeHost {
	return &fakeHost{
		config:      []byte(config),
		headers:     map[string]string{},
		filterState: map[string]string{},
		defined:     map[string]bool{},
		counts:      map[string]int{},
	}
}

func (h *fakeHost) Log(level Level, msg string) { h.logs = append(h.logs, msg) }

func (h *fakeHost) ClientAddress() (string, error) {
	h.clientAddrs++
	return h.clientAddr, h.clientAddrErr
}

func (h *fakeHost) PluginConfiguration() ([]byte, error) { return h.config, h.configErr }

func (h *fakeHost) DefineCounter(name string) { h.defined[name] = true }

func (h *fakeHost) Count(name string) { h.counts[name]++ }

func (h *fakeHost) AddCount(name string, n uint64) { h.counts[name] += int(n) }

// AddGauge adds to the Envoy's gauge: gauges, like shared data, are the
// Envoy's, not a worker's.
func (h *fakeHost) AddGauge(name string, delta int64) {
	d := h.shared()
	if d.gauges == nil {
		d.gauges = map[string]int64{}
	}
	d.gauges[name] += delta
}

func (h *fakeHost) NodeID() (string, error) { return h.node, nil }

// VerifySignature: the fake host has no crypto of its own, so the
// module checks every signature itself, as with a host without the
// foreign function.
func (h *fakeHost) VerifySignature(hash string, spki, sig, signed []byte) (bool, error) {
	return false, errNoHostCrypto
}

var errNoHostCrypto = errors.New("fake host: no verify_signature")

func (h *fakeHost) RootID() (string, error) {
	if h.rootID == "" {
		return "", errors.New("no root id")
	}
	return h.rootID, nil
}

// RequestHeaders gives the map's headers, sorted by name, then the
// repeated lines of extra.
func (h *fakeHost) RequestHeaders() ([][2]string, error) {
	if h.errHeaders != nil {
		return nil, h.errHeaders
	}
	var out [][2]string
	for _, name := range slices.Sorted(maps.Keys(h.headers)) {
		out = append(out, [2]string{name, h.headers[name]})
	}
	return append(out, h.extra...), nil
}

func (h *fakeHost) RouteName() (string, bool) { return h.route, h.routeFound }

func (h *fakeHost) RoutePolicy() (string, bool) { return h.routePolicy, h.routeTagged }

func (h *fakeHost) RemoveRequestHeader(name string) error {
	if h.errRemove != nil {
		return h.errRemove
	}
	delete(h.headers, name)
	h.dropExtra(name)
	h.edited()
	return nil
}

func (h *fakeHost) edited() { h.edits++ }

func (h *fakeHost) ReplaceRequestHeader(name, value string) error {
	if h.errReplace != nil {
		return h.errReplace
	}
	h.headers[name] = value
	h.dropExtra(name)
	h.edited()
	return nil
}

// dropExtra removes the repeated lines of a header, as Envoy's remove and
// replace do.
func (h *fakeHost) dropExtra(name string) {
	h.extra = slices.DeleteFunc(h.extra, func(kv [2]string) bool { return kv[0] == name })
}

func (h *fakeHost) SendLocalResponse(status int, details string, body []byte, headers [][2]string) error {
	if h.local != nil {
		return errors.New("a second local reply")
	}
	r := &localReply{status: status, details: details, body: string(body), headers: map[string]string{}}
	for _, kv := range headers {
		r.headers[kv[0]] = kv[1]
	}
	h.local = r
	return h.errLocal
}

func (h *fakeHost) SetTickPeriod(ms uint32) error {
	h.tickMillis = ms
	return nil
}

func (h *fakeHost) DownstreamData(start, max uint32) ([]byte, error) {
	if h.errData != nil {
		return nil, h.errData
	}
	if int(start) > len(h.data) {
		return nil, errors.New("reading past the data received")
	}
	h.dataRead += min(int(max), len(h.data)-int(start))
	return h.data[start : int(start)+min(int(max), len(h.data)-int(start))], nil
}

func (h *fakeHost) ReplaceDownstreamData(size uint32, data []byte) error {
	if h.errReplaceData != nil {
		return h.errReplaceData
	}
	if int(size) > len(h.data) {
		return errors.New("replacing more than was received")
	}
	h.data = append(append([]byte{}, data...), h.data[size:]...)
	return nil
}

func (h *fakeHost) SetConnectionFilterState(key, value string) error {
	if h.errState != nil {
		return h.errState
	}
	h.filterState[key] = value
	return nil
}

func (h *fakeHost) CloseDownstream() error {
	h.closed = append(h.closed, h.effective)
	if h.onClose != nil {
		h.onClose(h.effective)
	}
	return nil
}

func (h *fakeHost) SetEffectiveContext(id uint32) error {
	if h.errEffective != nil && id != rootID {
		return h.errEffective
	}
	h.effective = id
	return nil
}

const (
	rootID   = 1
	streamID = 2
	// tcpPlugin is the root id of the tcp plugin the tests configure.
	tcpPlugin = "directpipe.handshake_tcp.voice-raw"
)

var (
	secret = []byte("gate-test-secret-of-32-bytes-long")
	now    = time.Unix(1_800_000_000, 0)
)

// clock is the tcp gate's clock in tests: always now.
func clock() time.Time { return now }

// policyDoc is one policy as the control plane writes it: a bearer token,
// a subprotocol token or a query token, HS256, scope voice.
func policyDoc() map[string]any {
	return map[string]any{
		"name":    "voice",
		"realm":   "directpipe",
		"sources": []map[string]any{{"bearer": true}, {"subprotocol_prefix": "bearer."}, {"query": "access_token"}},
		"jwks": map[string]any{"keys": []map[string]string{
			{"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)},
		}},
		"identity_header": "x-directpipe-identity",
		"claim_headers":   map[string]string{"tenant": "x-directpipe-tenant"},
		"required_scopes": []string{"voice"},
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func token(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "tenant": "acme", "scope": "voice", "exp": now.Add(time.Hour).Unix()}
}

// sharedEntry is one entry of the fake's shared data, as Envoy keeps it:
// a value and the token of its last write.
type sharedEntry struct {
	value []byte
	cas   uint32
}

// sharedData is an Envoy's shared data, which several fake hosts (the
// workers) may hold. Tokens start at 1, so 0 always means "write anyway".
type sharedData struct {
	entries map[string]sharedEntry
	next    uint32
	gauges  map[string]int64
}

func (h *fakeHost) shared() *sharedData {
	if h.sharedData == nil {
		h.sharedData = &sharedData{entries: map[string]sharedEntry{}}
	}
	return h.sharedData
}

func (h *fakeHost) SharedData(key string) ([]byte, uint32, error) {
	if h.errShared != nil {
		return nil, 0, h.errShared
	}
	h.sharedReads++
	e := h.shared().entries[key]
	return e.value, e.cas, nil
}

func (h *fakeHost) SetSharedData(key string, value []byte, cas uint32) (bool, error) {
	if h.errShared != nil {
		return false, h.errShared
	}
	d := h.shared()
	if h.beforeSet != nil {
		h.beforeSet(key)
	}
	if e, ok := d.entries[key]; ok && cas != 0 && cas != e.cas {
		return false, nil
	}
	d.next++
	d.entries[key] = sharedEntry{value: append([]byte(nil), value...), cas: d.next}
	return true, nil
}

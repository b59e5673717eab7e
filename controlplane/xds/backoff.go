package xds

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dynamicmodulesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	dmnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dynamic_modules/v3"
	wasmnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// nackBackoff answers a NACK by offering the refused version again after a
// growing delay, a bounded number of times, and then only a newer version.
//
// Three behaviours meet here. go-control-plane's state-of-the-world cache
// answers at once a request whose version differs from the snapshot, and a
// NACK carries the last version Envoy accepted, so alone it would loop:
// offer, refuse, offer, as fast as both sides can. Its delta cache does
// the opposite: a refused resource counts as sent and is never offered
// again. And Envoy 1.40 remembers the hash of an extension config it
// refused after it started applying it (a Wasm plugin whose module is not
// downloaded yet fails there), so the same bytes offered again are
// skipped and ACKed without being applied. Remote Wasm modules hit all
// three: with nack_on_code_cache_miss Envoy refuses a config while it
// downloads the module and must be offered it again, changed, after the
// download. So a re-offer of a refused version carries a retry number in
// the Wasm VM's environment, which changes the config's hash but not the
// VM (Envoy keys VMs by id, VM configuration and code only).
//
// The number travels in the response's version_info too (retryMark), and
// comes back in every request Envoy sends while it runs those bytes. So a
// replica that Envoy reconnects to, and that never made that offer, sends
// the same version with the same mark: the bytes Envoy runs, which it
// skips, instead of the unmarked ones, which it would apply again.
type nackBackoff struct {
	cachev3.Cache
	// version is the snapshot's current version of a type.
	version func(typeURL string) string
	base    time.Duration
	tries   int

	mu     sync.Mutex
	states map[string]*nackState // by node id and type
	// offers numbers every marked offer, so that no two offers, on any
	// stream, carry the same bytes: Envoy may have failed on any of them.
	// It starts at random, so that replicas number in other ranges.
	offers int
}

// nackState is one node's refusal of one type's version.
type nackState struct {
	version  string // the refused version (state of the world)
	attempts int    // refusals of it so far
	offered  bool   // re-offered since the last refusal
}

// retryMark joins a version and the number of a marked re-offer of it in
// a state-of-the-world version_info.
const retryMark = "+retry-"

// splitRetry is a version_info's version and the number of the re-offer
// it names, 0 for none.
func splitRetry(v string) (string, int) {
	base, n, ok := strings.Cut(v, retryMark)
	if !ok {
		return v, 0
	}
	attempt, err := strconv.Atoi(n)
	if err != nil || attempt <= 0 {
		return v, 0
	}
	return base, attempt
}

// BaseVersion is a version_info without the number of a re-offer: the
// snapshot version the resources are from.
func BaseVersion(v string) string {
	base, _ := splitRetry(v)
	return base
}

// RetryEnv is the environment variable that numbers a re-offer of a
// refused Wasm filter config.
const RetryEnv = "DIRECTPIPE_CONFIG_RETRY"

const maxBackoffStates = 100_000

func newNACKBackoff(c cachev3.Cache, version func(string) string) *nackBackoff {
	return &nackBackoff{
		Cache: c, version: version, base: 250 * time.Millisecond, tries: 9, states: map[string]*nackState{},
		offers: rand.IntN(1 << 30),
	}
}

// plan decides how to answer a request: at once and unchanged (nil), or
// marked, after delay (for a NACK), or never for this version (retry
// false).
type plan struct {
	nack  bool
	delay time.Duration
	retry bool
}

func (b *nackBackoff) plan(node, typeURL string, nack bool, ackedVersion *string) *plan {
	key := node + "\x00" + typeURL
	current := b.version(typeURL)
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.states[key]
	if !nack {
		if st == nil {
			return nil
		}
		// An ACK of the re-offered version, or of a newer one, ends the
		// episode; an ACK of the refused bytes unchanged does not: that
		// is Envoy skipping what it failed to apply.
		if ackedVersion == nil && st.offered ||
			ackedVersion != nil && (*ackedVersion == st.version && st.offered || *ackedVersion != st.version && *ackedVersion == current) {
			delete(b.states, key)
			return nil
		}
		return &plan{retry: true}
	}
	if st == nil || st.version != current {
		if len(b.states) >= maxBackoffStates {
			clear(b.states) // forgetting only makes a retry come sooner
		}
		st = &nackState{version: current}
		b.states[key] = st
	}
	st.attempts++
	st.offered = false
	p := &plan{nack: true, retry: st.attempts <= b.tries}
	d := b.base << (st.attempts - 1)
	// ±20% so that a fleet that failed together does not retry together.
	p.delay = d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
	return p
}

// offer records a marked offer and returns its number.
func (b *nackBackoff) offer(node, typeURL string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.states[node+"\x00"+typeURL]; st != nil {
		st.offered = true
	}
	b.offers++
	return b.offers
}

// mayHaveRefused reports whether a stream's first request of the filter
// configs (no nonce yet) comes from an Envoy that runs another version
// than the current one (v, without a mark): one this process never
// served, or whose offer of the current version it never saw answered.
// Such an Envoy may have refused the current version on a replica that
// is gone, or before this process restarted, and this process cannot
// know it. A fresh Envoy names no version and refused nothing.
func (b *nackBackoff) mayHaveRefused(req *cachev3.Request, v string) bool {
	return req.GetTypeUrl() == resource.ExtensionConfigType && req.GetResponseNonce() == "" &&
		v != "" && v != b.version(req.GetTypeUrl())
}

// runs records that a node runs re-offer attempt, made here or by
// another replica, so that this one's next offers carry other numbers.
func (b *nackBackoff) runs(attempt int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.offers = max(b.offers, attempt)
}

// CreateWatch holds a NACK's watch: a newer version is sent at once, the
// refused one again only after the delay, and marked. A request from an
// Envoy that runs a marked re-offer of the current version is answered,
// if at all, with that version marked the same.
func (b *nackBackoff) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	node, typeURL := req.GetNode().GetId(), req.GetTypeUrl()
	v, running := splitRetry(req.GetVersionInfo())
	if running > 0 {
		req = proto.Clone(req).(*discoveryv3.DiscoveryRequest)
		req.VersionInfo = v
	}
	p := b.plan(node, typeURL, req.GetErrorDetail() != nil, &v)
	if p == nil && running > 0 && v == b.version(typeURL) {
		b.runs(running)
		same := func(r cachev3.Response) cachev3.Response {
			if version, err := r.GetVersion(); err == nil && version == v {
				return markedResponse{Response: r, attempt: running}
			}
			return r
		}
		open := func(ch chan cachev3.Response) (func(), error) { return b.Cache.CreateWatch(req, sub, ch) }
		return relay(0, true, nil, nil, out, open, same), nil
	}
	if p == nil && b.mayHaveRefused(req, v) {
		// Envoy may have refused the current filter configs on a replica
		// that is gone (or before a restart), and would skip their bytes
		// unapplied: they come marked, as a re-offer would.
		mark := func(r cachev3.Response) cachev3.Response {
			return markedResponse{Response: r, attempt: b.offer(node, typeURL)}
		}
		open := func(ch chan cachev3.Response) (func(), error) { return b.Cache.CreateWatch(req, sub, ch) }
		return relay(0, true, nil, nil, out, open, mark), nil
	}
	if p == nil {
		return b.Cache.CreateWatch(req, sub, out)
	}
	mark := func(r cachev3.Response) cachev3.Response {
		return markedResponse{Response: r, attempt: b.offer(node, typeURL)}
	}
	open := func(ch chan cachev3.Response) (func(), error) { return b.Cache.CreateWatch(req, sub, ch) }
	if !p.nack {
		return relay(0, true, nil, nil, out, open, mark), nil
	}
	// Asking with the snapshot's own version opens a watch that fires only
	// on a newer one, which needs no mark.
	held := proto.Clone(req).(*discoveryv3.DiscoveryRequest)
	held.VersionInfo = b.version(typeURL)
	mid := make(chan cachev3.Response, 1)
	cancelHeld, err := b.Cache.CreateWatch(held, sub, mid)
	if err != nil {
		return nil, err
	}
	return relay(p.delay, p.retry, mid, cancelHeld, out, open, mark), nil
}

// CreateDeltaWatch offers a NACK's resources again after the delay, by
// forgetting that they were sent, and marked.
func (b *nackBackoff) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	node, typeURL := req.GetNode().GetId(), req.GetTypeUrl()
	p := b.plan(node, typeURL, req.GetErrorDetail() != nil, nil)
	mark := func(r cachev3.DeltaResponse) cachev3.DeltaResponse {
		return markedDelta{DeltaResponse: r, attempt: b.offer(node, typeURL)}
	}
	// A reconnecting Envoy names the filter configs it holds and is sent
	// those it holds at another version than the current one, which it
	// may have refused on a replica that is gone (see mayHaveRefused):
	// marked, as a re-offer.
	if p == nil && typeURL == resource.ExtensionConfigType && req.GetResponseNonce() == "" && len(req.GetInitialResourceVersions()) > 0 {
		open := func(ch chan cachev3.DeltaResponse) (func(), error) { return b.Cache.CreateDeltaWatch(req, sub, ch) }
		return relay(0, true, nil, nil, out, open, mark), nil
	}
	if p == nil || p.nack && !p.retry {
		return b.Cache.CreateDeltaWatch(req, sub, out)
	}
	if !p.nack {
		open := func(ch chan cachev3.DeltaResponse) (func(), error) { return b.Cache.CreateDeltaWatch(req, sub, ch) }
		return relay(0, true, nil, nil, out, open, mark), nil
	}
	mid := make(chan cachev3.DeltaResponse, 1)
	cancelHeld, err := b.Cache.CreateDeltaWatch(req, sub, mid)
	if err != nil {
		return nil, err
	}
	open := func(ch chan cachev3.DeltaResponse) (func(), error) {
		return b.Cache.CreateDeltaWatch(req, forgetful{sub}, ch)
	}
	return relay(p.delay, true, mid, cancelHeld, out, open, mark), nil
}

// forgetful is a subscription that claims nothing was sent, so the cache
// sends every subscribed resource again.
type forgetful struct{ cachev3.Subscription }

func (forgetful) ReturnedResources() map[string]string { return map[string]string{} }

// relay forwards what the held watch (mid) sends, unchanged. When delay
// passes first (and retry is true) it ends the held watch, opens the real
// one and forwards its answer through mark. The returned cancel stops
// whichever is open and returns only once nothing more can reach out, as
// the xDS server expects of a cancelled watch.
func relay[R any](delay time.Duration, retry bool, mid chan R, cancelHeld func(), out chan R, open func(chan R) (func(), error), mark func(R) R) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var cancelReal func()
	call := func(f func()) {
		if f != nil {
			f()
		}
	}
	forward := func(r R) {
		select {
		case out <- r:
		case <-stop:
		}
	}
	go func() {
		defer close(done)
		var fire <-chan time.Time
		if retry {
			t := time.NewTimer(delay)
			defer t.Stop()
			fire = t.C
		}
		select {
		case r := <-mid: // a newer version
			call(cancelHeld)
			forward(r)
			return
		case <-stop:
			call(cancelHeld)
			return
		case <-fire:
		}
		call(cancelHeld)
		select {
		case r := <-mid: // a newer version raced the timer
			forward(r)
			return
		default:
		}
		real := make(chan R, 1)
		c, err := open(real)
		if err != nil {
			return // the stream's next request opens a new watch
		}
		mu.Lock()
		cancelReal = c
		mu.Unlock()
		select {
		case r := <-real:
			forward(mark(r))
		case <-stop:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			mu.Lock()
			defer mu.Unlock()
			call(cancelReal)
		})
	}
}

// markedResponse is a state-of-the-world response whose Wasm filter
// configs carry the retry number.
type markedResponse struct {
	cachev3.Response
	attempt int
}

func (m markedResponse) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	r, err := m.Response.GetDiscoveryResponse()
	if err != nil {
		return nil, err
	}
	// The cache keeps the marshalled response: change a copy.
	r = proto.Clone(r).(*discoveryv3.DiscoveryResponse)
	r.VersionInfo += retryMark + strconv.Itoa(m.attempt)
	for i, a := range r.GetResources() {
		if r.Resources[i], err = markRetry(a, m.attempt); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// markedDelta is the same for delta xDS.
type markedDelta struct {
	cachev3.DeltaResponse
	attempt int
}

func (m markedDelta) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	r, err := m.DeltaResponse.GetDeltaDiscoveryResponse()
	if err != nil {
		return nil, err
	}
	r = proto.Clone(r).(*discoveryv3.DeltaDiscoveryResponse)
	for _, res := range r.GetResources() {
		if res.Resource, err = markRetry(res.GetResource(), m.attempt); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// markRetry sets RetryEnv in a Wasm filter config, and a retry number in a
// dynamic-module one; other resources pass unchanged.
func markRetry(a *anypb.Any, attempt int) (*anypb.Any, error) {
	if a.GetTypeUrl() != resource.ExtensionConfigType {
		return a, nil
	}
	tec := &corev3.TypedExtensionConfig{}
	if err := a.UnmarshalTo(tec); err != nil {
		return nil, err
	}
	var wasm interface {
		proto.Message
		GetConfig() *wasmv3.PluginConfig
	}
	switch tec.GetTypedConfig().GetTypeUrl() {
	case "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm":
		wasm = &wasmhttpv3.Wasm{}
	case "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm":
		wasm = &wasmnetv3.Wasm{}
	case "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter":
		return markDynamicModule(tec, &dmfilterv3.DynamicModuleFilter{}, attempt)
	case "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter":
		return markDynamicModule(tec, &dmnetv3.DynamicModuleNetworkFilter{}, attempt)
	default:
		return a, nil
	}
	if err := tec.GetTypedConfig().UnmarshalTo(wasm); err != nil {
		return nil, err
	}
	vm := wasm.GetConfig().GetVmConfig()
	if vm == nil {
		return a, nil
	}
	if vm.EnvironmentVariables == nil {
		vm.EnvironmentVariables = &wasmv3.EnvironmentVariables{}
	}
	if vm.EnvironmentVariables.KeyValues == nil {
		vm.EnvironmentVariables.KeyValues = map[string]string{}
	}
	vm.EnvironmentVariables.KeyValues[RetryEnv] = strconv.Itoa(attempt)
	inner, err := deterministicAny(wasm)
	if err != nil {
		return nil, err
	}
	tec.TypedConfig = inner
	return deterministicAny(tec)
}

// markDynamicModule numbers a re-offer of a dynamic-module filter config,
// HTTP or network, in the module config's name, which Envoy ignores when
// the config names the module's source (and ours always does): the
// config's hash changes, the module and what it is given do not.
func markDynamicModule(tec *corev3.TypedExtensionConfig, f dynamicModuleFilter, attempt int) (*anypb.Any, error) {
	if err := tec.GetTypedConfig().UnmarshalTo(f); err != nil {
		return nil, err
	}
	m := f.GetDynamicModuleConfig()
	if m.GetModule() == nil {
		return deterministicAny(tec)
	}
	m.Name = "directpipe-retry-" + strconv.Itoa(attempt)
	inner, err := deterministicAny(f)
	if err != nil {
		return nil, err
	}
	tec.TypedConfig = inner
	return deterministicAny(tec)
}

// dynamicModuleFilter is what the HTTP and the network dynamic-module
// filter configs share.
type dynamicModuleFilter interface {
	proto.Message
	GetDynamicModuleConfig() *dynamicmodulesv3.DynamicModuleConfig
}

// deterministicAny packs m in the same bytes every time, in any replica:
// Envoy compares an extension config with the one it runs by hashing
// them, and the Wasm VM's environment is a map, whose order an ordinary
// marshal does not fix.
func deterministicAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

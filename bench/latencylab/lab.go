//go:build linux

// Package latencylab measures, in one run and on loopback, what a voice
// stream pays on each path: straight to the back end, through Envoy's
// direct path, through a generic gateway's full chain, and as one HTTP
// request per frame. It also times handshakes per auth mode and the control
// plane's translation and push. `make bench` runs it; a test runs it tiny.
package latencylab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/template"
	"time"

	_ "embed"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// Config sizes a run.
type Config struct {
	Streams  int
	Frames   int
	Interval time.Duration
	// Handshakes per auth mode, one after another.
	Handshakes int
	// RouteCounts are the policy sizes whose translation is timed.
	RouteCounts []int
	// Push sizes the change-to-ACK measurements.
	Push PushConfig
	// Fleet sizes the fleet section.
	Fleet FleetConfig
	// Rounds runs every path this many times, in a rotated order each
	// round, so that no path always goes first into a cold Envoy.
	Rounds int
	// Workers is every proxy's worker count: Envoy's concurrency, nginx's
	// worker processes, HAProxy's threads.
	Workers int
	// Placement names the core layout (see NewPlacement).
	Placement string
	// Capacity, Storm and Profile size those measurements.
	Capacity CapacityConfig
	Storm    StormConfig
	Profile  ProfileConfig
	// Select narrows the run; the zero value measures everything.
	Select Selection
	// Log receives progress lines.
	Log io.Writer
}

// Default fits a 2-core machine in a few minutes.
func Default() Config {
	return Config{
		Streams: 20, Frames: 500, Interval: 20 * time.Millisecond,
		Handshakes: 200, RouteCounts: []int{100, 1000, 10000}, Rounds: 3,
		Push:    PushConfig{Changes: 100, LargeRoutes: 10000, LargeRuns: 5, Nodes: 100, NodeRuns: 20},
		Fleet:   FleetConfig{Nodes: 1000, Changes: 5},
		Workers: runtime.NumCPU(), Placement: "split",
		Capacity: CapacityConfig{Start: 50, Max: 1600, Frames: 200, Refine: 2},
		Storm:    StormConfig{Clients: 200, Timeout: 20 * time.Second},
		Profile:  ProfileConfig{Streams: 20, Frames: 250},
	}
}

// Tiny proves the lab works end to end, in seconds.
func Tiny() Config {
	return Config{
		Streams: 2, Frames: 20, Interval: 5 * time.Millisecond,
		Handshakes: 5, RouteCounts: []int{10, 100}, Rounds: 1,
		Push:    PushConfig{Changes: 2, LargeRoutes: 100, LargeRuns: 1, Nodes: 3, NodeRuns: 1},
		Fleet:   FleetConfig{Nodes: 6, Changes: 1},
		Workers: runtime.NumCPU(), Placement: "split",
		Capacity: CapacityConfig{Start: 2, Max: 4, Frames: 10},
		Storm:    StormConfig{Clients: 3, Timeout: 10 * time.Second},
		Profile:  ProfileConfig{Streams: 2, Frames: 10},
	}
}

// Machine says where the numbers come from.
type Machine struct {
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	Envoy  string `json:"envoy"`
	Go     string `json:"go"`
	When   string `json:"when"`
}

// Path is one way of carrying a voice stream.
type Path struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Available   bool               `json:"available"`
	Note        string             `json:"note,omitempty"`
	RTT         voiceprobe.Summary `json:"rtt"`
	Sent        int                `json:"sent"`
	Received    int                `json:"received"`
	Reordered   int                `json:"reordered"`
	Lost        int                `json:"lost"`
	Disconnects int                `json:"disconnects"`
	// ProxyCPUPer10k is the proxy's CPU seconds per 10,000 frames (every
	// process and thread of it), from /proc.
	ProxyCPUPer10k float64 `json:"proxy_cpu_s_per_10k_frames"`
	samples        []time.Duration
}

// Handshake is the time to open one stream in an auth mode.
type Handshake struct {
	Mode      string             `json:"mode"`
	Available bool               `json:"available"`
	Note      string             `json:"note,omitempty"`
	Latency   voiceprobe.Summary `json:"latency"`
	Failures  int                `json:"failures"`
}

// Translation is the time to translate a policy of Routes routes.
type Translation struct {
	Routes int           `json:"routes"`
	Time   time.Duration `json:"time_ns"`
}

// Report is a whole run.
type Report struct {
	Machine     Machine       `json:"machine"`
	Config      Config        `json:"config"`
	Paths       []*Path       `json:"paths"`
	Handshakes  []*Handshake  `json:"handshakes"`
	Translation []Translation `json:"translation"`
	Pushes      []*PushRow    `json:"pushes"`
	Fleet       *Fleet        `json:"fleet,omitempty"`
	Placement   Placement     `json:"placement"`
	// Peers are the versions of the other proxies measured.
	Peers    map[string]string `json:"peers"`
	Capacity []*Capacity       `json:"capacity"`
	Profiles []*Profile        `json:"profiles"`
	Storms   []*Storm          `json:"storms"`
	Tunings  []*Tuning         `json:"tunings"`
	// TuningRefs are no-proxy and the peers, measured in the tunings'
	// rounds, so that each setting is also seen against the best peer.
	TuningRefs []*Path `json:"tuning_refs,omitempty"`
}

//go:embed envoy_static.yaml.tmpl
var staticTemplate string

// lab is one run's processes.
type lab struct {
	t     testkit.T
	cfg   Config
	log   io.Writer
	stack *stack
	// native is the stack with the native build of the HTTP filter (for
	// the handshakes and paths sections).
	native  *stack
	static  *testkit.Envoy
	ports   map[string]int
	token   string
	backend *testkit.Backend
	// placement pins every process; peers are nginx and HAProxy.
	placement Placement
	peers     map[string]*daemon
}

// Run starts everything, measures every path, and returns the report.
func Run(t testkit.T, cfg Config) (*Report, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	l := &lab{t: t, cfg: cfg, log: cfg.Log}
	var err error
	if l.token, err = jwtmint.Demo("bench", time.Hour); err != nil {
		return nil, err
	}
	if l.placement, err = NewPlacement(cfg.Placement, runtime.NumCPU()); err != nil {
		return nil, err
	}
	l.backend = testkit.StartBackend(t)
	l.stack = startStack(t, l.backend, cfg.Workers, testkit.FilterWasm, nil)
	sel := cfg.Select
	// The static Envoy and the peers serve the data path's sections only.
	dataPath := sel.section("paths") || sel.section("capacity") || sel.section("profile") || sel.section("storm") ||
		sel.section("tunings") || sel.section("handshakes")
	if dataPath {
		if err := l.startStatic(); err != nil {
			return nil, err
		}
		if err := l.startPeers(); err != nil {
			return nil, err
		}
	}
	if sel.section("handshakes") || sel.section("paths") {
		// The same stack with the native build of the HTTP filter, for
		// its handshakes and its direct path.
		l.native = startStack(t, l.backend, cfg.Workers, testkit.FilterNative, &l.stack.keys)
	}
	if err := l.pinAll(); err != nil {
		return nil, err
	}
	rep := &Report{Machine: machine(), Config: cfg, Placement: l.placement, Peers: l.peerVersions()}
	var all []pathRunner
	if dataPath {
		all = l.runners()
	}
	var runners []pathRunner
	for _, r := range all {
		if cfg.Select.path(r.name) {
			runners = append(runners, r)
		}
	}
	if sel.section("paths") {
		rep.Paths = l.paths(runners)
	}
	if sel.section("capacity") {
		rep.Capacity = l.capacity(runners)
	}
	if sel.section("profile") {
		rep.Profiles = l.profiles(runners)
	}
	if sel.section("storm") {
		rep.Storms = l.storms(runners)
	}
	if sel.section("tunings") {
		if rep.Tunings, rep.TuningRefs, err = l.tunings(tuningRefs(all)); err != nil {
			return nil, err
		}
	}
	if sel.section("handshakes") {
		for _, h := range l.handshakes() {
			fmt.Fprintf(l.log, ">> handshakes %s: p50 %v\n", h.Mode, h.Latency.P50)
			rep.Handshakes = append(rep.Handshakes, h)
		}
	}
	if sel.section("control") {
		fmt.Fprintf(l.log, ">> control plane: translation\n")
		if rep.Translation, err = timeTranslation(cfg.RouteCounts); err != nil {
			return nil, err
		}
	}
	if sel.section("push") {
		fmt.Fprintf(l.log, ">> control plane: change to ACK\n")
		if rep.Pushes, err = l.stack.pushes(cfg.Push, l.log); err != nil {
			return nil, err
		}
	}
	if sel.section("fleet") {
		if rep.Fleet, err = l.fleet(cfg.Fleet); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), When: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if bin, err := testkit.EnvoyBinary(); err == nil {
		if out, err := exec.Command(bin, "--version").Output(); err == nil {
			m.Envoy = strings.TrimSpace(string(out))
			if i := strings.Index(m.Envoy, "version: "); i >= 0 {
				m.Envoy = m.Envoy[i+len("version: "):]
			}
		}
	}
	return m
}

func (l *lab) startStatic() error {
	l.ports = map[string]int{}
	for _, k := range []string{"admin", "full", "jwt", "plain", "module"} {
		l.ports[k] = testkit.FreePort(l.t)
	}
	_, voicePort, _ := strings.Cut(l.backend.VoiceAddr, ":")
	vp, _ := strconv.Atoi(voicePort)
	var buf bytes.Buffer
	err := template.Must(template.New("static").Parse(staticTemplate)).Execute(&buf, map[string]any{
		"AdminPort": l.ports["admin"], "FullChainPort": l.ports["full"], "NativeJWTPort": l.ports["jwt"],
		"PlainPort": l.ports["plain"], "VoicePort": vp, "FrameWasm": testkit.Binary(l.t, "framefilter.wasm"),
		"JWKS": l.stack.keys.jwksJSON(), "NativeModulePort": l.ports["module"],
		"NativeModule": testkit.NativeModule(l.t), "NativePolicy": l.stack.keys.policyJSON(),
	})
	if err != nil {
		return err
	}
	l.static = testkit.StartEnvoyWithConfig(l.t, buf.Bytes(), l.ports["admin"], l.cfg.Workers, time.Second)
	return nil
}

func (l *lab) bearer() http.Header { return http.Header{"Authorization": {"Bearer " + l.token}} }

// pathRunner measures one path once. A WebSocket path also says where it
// connects and which processes carry it, for the capacity search, the
// profile and the reconnect storm.
type pathRunner struct {
	name, desc string
	run        func() *Path
	url        string
	header     http.Header
	procs      procs
}

func (l *lab) streamRunner(name, desc, url string, h http.Header, p procs) pathRunner {
	return pathRunner{name, desc, func() *Path { return l.stream(name, desc, url, h, p) }, url, h, p}
}

// runners are every path the lab measures, in the order of the tables.
func (l *lab) runners() []pathRunner {
	direct := onEnvoy(l.stack.envoy)
	runners := []pathRunner{
		l.streamRunner("no-proxy", "straight to the back end: the floor", "ws://"+l.backend.VoiceAddr+"/v1/voice", nil, nil),
		l.streamRunner("direct", "Envoy, minimal upgrade chain (handshake check + router)", l.stack.url("ws", "/v1/voice"), l.bearer(), direct),
		l.streamRunner("tcp", "Envoy, tcp mode route: a listener whose only filter is tcp_proxy", "ws://"+l.stack.raw+"/v1/voice", nil, direct),
		l.streamRunner("tcp-auth", "Envoy, tcp mode route with the tcp handshake module in front of tcp_proxy", "ws://"+l.stack.rawAuth+"/v1/voice", l.bearer(), direct),
		l.streamRunner("full-chain", "Envoy, REST chain with a Wasm filter reading every frame", fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", l.ports["full"]), nil, onEnvoy(l.static)),
		{name: "rest-per-frame", desc: "one HTTP POST per frame through the REST route, pooled connections", run: func() *Path { return l.restPerFrame(direct) }},
	}
	if l.native != nil {
		runners = append(runners,
			l.streamRunner("direct-native", "Envoy, minimal upgrade chain with the native build of the handshake check (a dynamic module, entered once per chunk) + router",
				l.native.url("ws", "/v1/voice"), l.bearer(), onEnvoy(l.native.envoy)),
			l.streamRunner("tcp-auth-native", "Envoy, tcp mode route with the native build of the tcp handshake check (a dynamic-module network filter whose per-chunk hooks are C) in front of tcp_proxy",
				"ws://"+l.native.rawAuth+"/v1/voice", l.bearer(), onEnvoy(l.native.envoy)),
			l.streamRunner("no-filter", "Envoy, upgrade chain of the router alone (no handshake check)",
				fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", l.ports["plain"]), nil, onEnvoy(l.static)))
	}
	return append(runners, l.peerRunners()...)
}

func (l *lab) paths(runners []pathRunner) []*Path {
	// Warm every path up once: the first streams through a fresh Envoy pay
	// for connection pools and lazily built state, not for the path.
	measured := l.cfg
	l.cfg.Streams, l.cfg.Frames = 2, 25
	for _, r := range runners {
		r.run()
	}
	l.cfg = measured
	results := make([]*Path, len(runners))
	rounds := max(l.cfg.Rounds, 1)
	for round := range rounds {
		for k := range runners {
			i := (k + round) % len(runners)
			r := runners[i]
			fmt.Fprintf(l.log, ">> path %s, round %d/%d\n", r.name, round+1, rounds)
			results[i] = merge(results[i], r.run())
		}
	}
	for _, p := range results {
		if p.Available {
			p.RTT = voiceprobe.Summarize(p.samples)
		}
	}
	return results
}

// merge adds one round of a path to the rounds before it.
func merge(acc, p *Path) *Path {
	if acc == nil {
		return p
	}
	if !p.Available {
		acc.Available, acc.Note = false, p.Note
		return acc
	}
	frames := acc.Received + p.Received
	if frames > 0 {
		acc.ProxyCPUPer10k = (acc.ProxyCPUPer10k*float64(acc.Received) + p.ProxyCPUPer10k*float64(p.Received)) / float64(frames)
	}
	acc.Sent += p.Sent
	acc.Received += p.Received
	acc.Reordered += p.Reordered
	acc.Lost += p.Lost
	acc.Disconnects += p.Disconnects
	acc.samples = append(acc.samples, p.samples...)
	return acc
}

// stream measures a WebSocket path, and the CPU the proxy on it used.
func (l *lab) stream(name, desc, url string, h http.Header, proxy procs) *Path {
	p := &Path{Name: name, Description: desc, Available: true}
	cpu0 := cpuSeconds(proxy)
	res, err := voiceprobe.Run(context.Background(), voiceprobe.Config{
		URL: url, Header: h, Streams: l.cfg.Streams, Frames: l.cfg.Frames, Interval: l.cfg.Interval,
	})
	if err != nil {
		p.Available, p.Note = false, err.Error()
		return p
	}
	p.setCPU(proxy, cpu0, res.Received)
	p.RTT, p.Sent, p.Received, p.Reordered, p.Lost = res.RTT, res.Sent, res.Received, res.Reordered, res.Lost
	p.Disconnects = res.Disconnects + res.FailedDials
	p.samples = res.Samples()
	return p
}

func (p *Path) setCPU(proxy procs, before float64, frames int) {
	if proxy == nil || frames == 0 {
		return
	}
	p.ProxyCPUPer10k = (cpuSeconds(proxy) - before) / float64(frames) * 10000
}

// handshakes times opening streams in each auth mode. The modes take turns,
// one handshake each per round in a shuffled order, so that every mode sees
// the same machine: on a shared 2-core host the load moves in seconds, and
// modes measured one after another would compare those moments.
//
// A cold handshake carries a token the filter has not seen (every one is
// minted with its own jti), so the signature is checked; a cached one
// repeats one token, which the filter's cache of verified tokens answers
// (its first use, unmeasured, fills the cache). Envoy's jwt_authn gets the
// same cold tokens, alg for alg (no JWT cache is configured there, so each
// of its handshakes checks a signature).
func (l *lab) handshakes() []*Handshake {
	n := l.cfg.Handshakes
	k := l.stack.keys
	algs := []struct {
		name string
		cold []string
	}{
		{"HS256", k.tokens(jwt.SigningMethodHS256, jwtmint.KeyID, jwtmint.DevSecret(), n)},
		{"RS256", k.tokens(jwt.SigningMethodRS256, "rsa", k.rsa, n)},
		{"ES256", k.tokens(jwt.SigningMethodES256, "ec", k.ec, n)},
	}
	ours, native := l.stack.url("ws", "/v1/voice"), fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", l.ports["jwt"])
	ourNative := l.native.url("ws", "/v1/voice")
	// The native filter in the static Envoy, on a listener set up as
	// jwt_authn's: the stacks' rows carry the control plane's whole
	// configuration (see their public route rows), these only the filter.
	besideJWT := fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", l.ports["module"])
	modes := []handshakeMode{{"no auth (router only)", fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", l.ports["plain"]), nil}}
	// A public route of each stack: the filter runs and edits nothing,
	// so Envoy matches no route again; what it adds to no auth is the
	// filter's presence and the stack's configuration.
	modes = append(modes,
		handshakeMode{"directpipe filter, public route", l.stack.url("ws", "/v1/public"), nil},
		handshakeMode{"directpipe native filter, public route", l.native.url("ws", "/v1/public"), nil})
	for _, a := range algs {
		modes = append(modes,
			handshakeMode{"directpipe filter, " + a.name + ", cold", ours, a.cold},
			handshakeMode{"directpipe filter, " + a.name + ", cached", ours, a.cold[:1]},
			handshakeMode{"directpipe native filter, " + a.name + ", cold", ourNative, a.cold},
			handshakeMode{"directpipe native filter, " + a.name + ", cached", ourNative, a.cold[:1]},
			handshakeMode{"Envoy jwt_authn, " + a.name, native, a.cold},
			handshakeMode{"directpipe native filter on jwt_authn's listener setup, " + a.name + ", cold", besideJWT, a.cold},
			handshakeMode{"directpipe native filter on jwt_authn's listener setup, " + a.name + ", cached", besideJWT, a.cold[:1]})
	}
	hs256 := algs[0].cold
	modes = append(modes,
		handshakeMode{"tcp mode, no auth (tcp_proxy only)", "ws://" + l.stack.raw + "/v1/voice", nil},
		handshakeMode{"tcp mode, directpipe tcp module, HS256, cold", "ws://" + l.stack.rawAuth + "/v1/voice", hs256},
		handshakeMode{"tcp mode, directpipe tcp module, HS256, cached", "ws://" + l.stack.rawAuth + "/v1/voice", hs256[:1]})
	return runHandshakes(modes, n)
}

// handshakeMode is one auth mode: where to connect, and the bearer tokens
// to send, the i-th handshake tokens[i % len(tokens)] (none when empty).
type handshakeMode struct {
	name, url string
	tokens    []string
}

func (m handshakeMode) header(i int) http.Header {
	if len(m.tokens) == 0 {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + m.tokens[i%len(m.tokens)]}}
}

// runHandshakes opens n streams per mode, one per mode and round.
func runHandshakes(modes []handshakeMode, n int) []*Handshake {
	for _, m := range modes {
		if len(m.tokens) == 1 {
			voiceprobe.Handshake(context.Background(), m.url, m.header(0))
		}
	}
	out := make([]*Handshake, len(modes))
	samples := make([][]time.Duration, len(modes))
	for i := range modes {
		out[i] = &Handshake{Mode: modes[i].name, Available: true}
	}
	// Each round takes the modes in a new order: the handshake before
	// one leaves the CPU's caches to its Envoy, and a fixed order would
	// always give a mode the same predecessor (a cached row the cold row
	// of its own Envoy, say). Seeded, so runs are comparable.
	order := rand.New(rand.NewPCG(1, 2))
	for round := range n {
		for _, i := range order.Perm(len(modes)) {
			d, err := voiceprobe.Handshake(context.Background(), modes[i].url, modes[i].header(round))
			if err != nil {
				out[i].Failures++
				continue
			}
			samples[i] = append(samples[i], d)
		}
	}
	for i := range out {
		out[i].Latency = voiceprobe.Summarize(samples[i])
	}
	return out
}

// WriteOutputs writes results.json, results.md and the plots into dir.
func (r *Report) WriteOutputs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "results.json"), r); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	// A selective run (-sections) may have nothing to plot.
	if len(r.Paths) > 0 {
		if err := r.plotCDF(filepath.Join(dir, "latency_cdf.png")); err != nil {
			return err
		}
	}
	if len(r.Handshakes) == 0 {
		return nil
	}
	return r.plotHandshakes(filepath.Join(dir, "handshake.png"))
}

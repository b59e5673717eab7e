//go:build linux

package latencylab

import (
	"bytes"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

//go:embed envoy_tuning.yaml.tmpl
var tuningTemplate string

// tuning is one Envoy setting tried on the direct path's per-frame chain,
// measured against the same Envoy without it.
type tuning struct {
	name, desc   string
	concurrency  int
	ioUring      bool
	exactBalance bool
	bufferLimit  int
	noStats      bool
	noByteStats  bool
	noIdleTimer  bool
	tcpProxy     bool
}

var tunings = []tuning{
	{name: "baseline", desc: "the direct path's per-frame chain (upgrade chain of the router alone), Envoy's defaults"},
	{name: "concurrency 1", concurrency: 1, desc: "one worker thread instead of one per core"},
	{name: "exact_balance", exactBalance: true, desc: "no SO_REUSEPORT; the listener hands each connection to the worker with the fewest"},
	{name: "buffer 32 KiB", bufferLimit: 32 << 10, desc: "per_connection_buffer_limit_bytes 32 KiB on listener and cluster (default 1 MiB)"},
	{name: "io_uring", ioUring: true, desc: "the io_uring socket interface (experimental in Envoy)"},
	{name: "no stats", noStats: true, desc: "stats_matcher reject_all: no counter updated per frame"},
	{name: "no byte stats", noByteStats: true, desc: "stats_matcher drops only the byte counters and gauges updated on every read and write (`*_bytes_total`, `*_bytes_buffered`); connection counts stay"},
	{name: "no idle timers", noIdleTimer: true, desc: "no route or stream idle timeout re-armed per frame"},
	{name: "tcp_proxy", tcpProxy: true, desc: "the tcp mode chain instead (a listener whose only filter is tcp_proxy): what the HTTP connection manager costs per frame"},
}

// Tuning is one setting's round trip, CPU and profile.
type Tuning struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Path        *Path    `json:"path"`
	Profile     *Profile `json:"profile"`
}

// startTuning starts one Envoy with the setting, pinned like every proxy.
func (l *lab) startTuning(tu tuning, voicePort int) (pathRunner, error) {
	admin, port := testkit.FreePort(l.t), testkit.FreePort(l.t)
	var buf bytes.Buffer
	err := template.Must(template.New("tuning").Parse(tuningTemplate)).Execute(&buf, map[string]any{
		"AdminPort": admin, "Port": port, "VoicePort": voicePort, "IoUring": tu.ioUring, "ExactBalance": tu.exactBalance,
		"BufferLimit": tu.bufferLimit, "NoStats": tu.noStats, "NoByteStats": tu.noByteStats, "NoIdleTimer": tu.noIdleTimer, "TcpProxy": tu.tcpProxy,
	})
	if err != nil {
		return pathRunner{}, err
	}
	workers := l.cfg.Workers
	if tu.concurrency > 0 {
		workers = tu.concurrency
	}
	e := onEnvoy(testkit.StartEnvoyWithConfig(l.t, buf.Bytes(), admin, workers, time.Second))
	if err := pinAll(e, l.placement.Proxy); err != nil {
		return pathRunner{}, err
	}
	return l.streamRunner(tu.name, tu.desc, fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", port), nil, e), nil
}

// tuningRefs are the runners measured beside the settings, in the same
// rounds: the floor and the peers.
func tuningRefs(all []pathRunner) []pathRunner {
	var out []pathRunner
	for _, r := range all {
		if r.name == "no-proxy" || slices.ContainsFunc(peers, func(p peer) bool { return p.name == r.name }) {
			out = append(out, r)
		}
	}
	return out
}

// tunings measures every selected setting in rotated rounds of its own,
// with refs (the floor and the peers) in the same rounds, then profiles
// each setting (counters only: strace's slowdown would hide the
// differences).
func (l *lab) tunings(refs []pathRunner) ([]*Tuning, []*Path, error) {
	_, vp, _ := strings.Cut(l.backend.VoiceAddr, ":")
	voicePort, _ := strconv.Atoi(vp)
	var runners []pathRunner
	for _, tu := range tunings {
		if !l.cfg.Select.tuning(tu.name) {
			continue
		}
		r, err := l.startTuning(tu, voicePort)
		if err != nil {
			return nil, nil, fmt.Errorf("tuning %s: %w", tu.name, err)
		}
		runners = append(runners, r)
	}
	paths := l.paths(append(slices.Clip(runners), refs...))
	out := make([]*Tuning, len(runners))
	for i, r := range runners {
		fmt.Fprintf(l.log, ">> profile tuning %s\n", r.name)
		out[i] = &Tuning{Name: r.name, Description: r.desc, Path: paths[i], Profile: l.profile(r, false)}
	}
	return out, paths[len(runners):], nil
}

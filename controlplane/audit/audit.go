// Package audit finds where an Envoy's configuration hurts long-lived
// streams (WebSockets and raw tcp_proxy connections): timeouts that cut
// them, filters that buffer or read every frame, listener updates that
// drain them, limits and overload actions that reset them. It reads what
// Envoy's admin interface prints (/config_dump, /server_info, /stats) and
// does no I/O of its own, except reading Wasm modules through the
// caller's function.
package audit

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
)

// Severity ranks a finding by how likely it is to end or stall a stream.
type Severity int

const (
	Info Severity = iota
	Low
	Medium
	High
)

var severityNames = []string{"info", "low", "medium", "high"}

func (s Severity) String() string {
	if s < Info || s > High {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// ParseSeverity reads "info", "low", "medium" or "high".
func ParseSeverity(s string) (Severity, error) {
	if i := slices.Index(severityNames, strings.ToLower(s)); i >= 0 {
		return Severity(i), nil
	}
	return 0, fmt.Errorf("unknown severity %q: want info, low, medium or high", s)
}

func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	*s = v
	return err
}

// Finding is one place in the configuration that hurts long-lived streams.
type Finding struct {
	Severity Severity `json:"severity"`
	// Check names the kind of finding; stable, for scripts.
	Check string `json:"check"`
	// Path locates the setting in the config dump, e.g.
	// dynamic_listeners[public].active_state.listener.filter_chains[0]...
	Path string `json:"path"`
	// Found says what the setting is.
	Found string `json:"found"`
	// Why says how it hurts a long-lived stream.
	Why string `json:"why"`
	Fix string `json:"fix"`
}

// Stream is one route or tcp_proxy that can carry a long-lived stream.
type Stream struct {
	Listener string `json:"listener"`
	// Kind is "websocket" (an HTTP route with upgrades) or "tcp".
	Kind string `json:"kind"`
	// Route describes the match, e.g. "vhost voice, path /v1/voice".
	Route   string `json:"route"`
	Path    string `json:"path"`
	Cluster string `json:"cluster,omitempty"`
	// Chain lists the filters a stream passes, in order.
	Chain []string `json:"chain"`
	// IdleTimeout is the timeout that ends a silent stream, with where it
	// comes from.
	IdleTimeout string `json:"idle_timeout"`
	// Findings counts the findings that apply to this stream, by severity.
	Findings map[string]int `json:"findings"`

	keys map[string]bool
}

// Report is the outcome of an audit.
type Report struct {
	Envoy    string    `json:"envoy,omitempty"`
	Streams  []*Stream `json:"streams"`
	Findings []Finding `json:"findings"`
	// Notes name what could not be read or checked.
	Notes []string `json:"notes,omitempty"`
}

// Count returns how many findings are at or above a severity.
func (r *Report) Count(min Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity >= min {
			n++
		}
	}
	return n
}

// Input is what Envoy's admin interface printed. Only ConfigDump is
// required; without ServerInfo and Stats the checks that need them say
// less.
type Input struct {
	ConfigDump []byte // /config_dump (JSON)
	ServerInfo []byte // /server_info (JSON)
	Stats      []byte // /stats?format=json
	// ReadFile reads a module (Wasm, or a dynamic module's shared object)
	// named by a filter's config; nil skips reading modules.
	ReadFile func(path string) ([]byte, error)
}

// Run audits one Envoy.
func Run(in Input) (*Report, error) {
	d, notes, err := decodeConfigDump(in.ConfigDump)
	if err != nil {
		return nil, err
	}
	a := &auditor{in: in, d: d, r: &Report{Notes: notes}, seen: map[string]int{}, clusterDone: map[string][]string{}}
	if len(in.ServerInfo) > 0 {
		if a.si, err = decodeServerInfo(in.ServerInfo); err != nil {
			return nil, err
		}
		a.r.Envoy = a.si.GetVersion()
	}
	if len(in.Stats) > 0 {
		if a.stats, err = decodeStats(in.Stats); err != nil {
			return nil, err
		}
	}
	a.index()
	a.server()
	a.listeners()
	a.overload()
	a.finish()
	return a.r, nil
}

type auditor struct {
	in    Input
	d     *dump
	si    *adminv3.ServerInfo
	stats map[string]int64 // nil when not given
	r     *Report

	routeConfigs map[string]located
	clusters     map[string]located
	ecds         map[string]located
	// seen maps check+path to the finding's index, so that a setting
	// shared by many streams is reported once.
	seen map[string]int
	// clusterDone holds the finding keys of each cluster checked, by
	// cluster name and stream kind.
	clusterDone map[string][]string
	exports     map[string]moduleExports
}

// add records a finding for the streams it affects and returns its key.
func (a *auditor) add(f Finding, streams ...*Stream) string {
	// The severity is in the key: a cluster shared by WebSockets and raw
	// streams can hurt one kind and not the other.
	key := f.Check + "\x00" + f.Path + "\x00" + f.Severity.String()
	if _, ok := a.seen[key]; !ok {
		a.seen[key] = len(a.r.Findings)
		a.r.Findings = append(a.r.Findings, f)
	}
	for _, s := range streams {
		s.keys[key] = true
	}
	return key
}

func (a *auditor) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if !slices.Contains(a.r.Notes, n) {
		a.r.Notes = append(a.r.Notes, n)
	}
}

func (a *auditor) newStream(s *Stream) *Stream {
	s.keys = map[string]bool{}
	a.r.Streams = append(a.r.Streams, s)
	return s
}

// finish counts findings per stream and sorts: streams by listener,
// findings most severe first.
func (a *auditor) finish() {
	for _, s := range a.r.Streams {
		s.Findings = map[string]int{}
		for key := range s.keys {
			s.Findings[a.r.Findings[a.seen[key]].Severity.String()]++
		}
	}
	slices.SortStableFunc(a.r.Findings, func(x, y Finding) int {
		if c := cmp.Compare(y.Severity, x.Severity); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Path, y.Path); c != 0 {
			return c
		}
		return cmp.Compare(x.Check, y.Check)
	})
	slices.SortStableFunc(a.r.Streams, func(x, y *Stream) int {
		return cmp.Or(cmp.Compare(x.Listener, y.Listener), cmp.Compare(x.Path, y.Path))
	})
	if a.r.Findings == nil {
		a.r.Findings = []Finding{}
	}
	if a.r.Streams == nil {
		a.r.Streams = []*Stream{}
	}
}

//go:build linux

package latencylab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTinyRun runs the whole lab in its tiny configuration: every path and
// auth mode against a real Envoy, and every output file. It asserts that
// the lab works, never how fast anything is.
func TestTinyRun(t *testing.T) {
	rep, err := Run(t, Tiny())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Paths {
		if !p.Available {
			continue
		}
		if p.Received != p.Sent || p.Sent == 0 || p.Lost != 0 || p.Disconnects != 0 {
			t.Errorf("path %s: sent %d received %d lost %d disconnects %d", p.Name, p.Sent, p.Received, p.Lost, p.Disconnects)
		}
	}
	for _, h := range rep.Handshakes {
		if h.Available && (h.Failures != 0 || h.Latency.Count == 0) {
			t.Errorf("handshakes %s: %d failures, %d samples", h.Mode, h.Failures, h.Latency.Count)
		}
	}
	if len(rep.Capacity) == 0 || len(rep.Profiles) != len(profiledPaths) || len(rep.Storms) != len(stormPaths) {
		t.Errorf("capacity, profile or storm missing: %d %d %d", len(rep.Capacity), len(rep.Profiles), len(rep.Storms))
	}
	for _, s := range rep.Storms {
		if s.Recovered != s.Clients {
			t.Errorf("storm %s: %d of %d clients back (%s)", s.Path, s.Recovered, s.Clients, s.Note)
		}
	}
	if len(rep.Translation) == 0 || len(rep.Pushes) == 0 {
		t.Errorf("control plane numbers missing: %+v %+v", rep.Translation, rep.Pushes)
	}
	for _, p := range rep.Pushes {
		if p.Failures != 0 || p.Latency.Count == 0 {
			t.Errorf("push %s: %d failures (%s), %d samples", p.Name, p.Failures, p.Note, p.Latency.Count)
		}
		// The timeline names when the Envoy got and ACKed each type.
		acked := false
		for _, s := range p.Timeline {
			acked = acked || strings.HasSuffix(s.What, " ACKed")
		}
		if !acked {
			t.Errorf("push %s: no ACK in the Envoy's timeline %+v", p.Name, p.Timeline)
		}
	}
	if f := rep.Fleet; f == nil || f.Ack.Count != f.Nodes || f.Resync.Count != f.Moved || f.Moved == 0 {
		t.Errorf("fleet section incomplete: %+v", f)
	}
	dir := t.TempDir()
	if err := rep.WriteOutputs(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.md", "results.json", "latency_cdf.png", "handshake.png"} {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil || info.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"no-proxy", "direct", "tcp-auth", "full-chain", "rest-per-frame", "jwt_authn", "tcp module", "validate + translate", "Change to ACK",
		"nginx", "haproxy", "best peer", "Capacity", "Where the proxy spends", "Reconnect storm", "Placement", "settings tried", "## Fleet"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
}

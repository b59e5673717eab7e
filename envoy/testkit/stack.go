package testkit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/directpipe/directpipe/controlplane/app"
	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/xds"
)

// Binary returns the path of a program `make build` put in bin/.
func Binary(t T, name string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make build` first (make test does)", p)
	}
	return p
}

// WasmModule is the handshake module: $DIRECTPIPE_WASM, else bin/.
func WasmModule(t T) string {
	t.Helper()
	if p := os.Getenv("DIRECTPIPE_WASM"); p != "" {
		return p
	}
	return Binary(t, "handshake.wasm")
}

// Backend is the example voice back end, running as its own process.
type Backend struct {
	VoiceAddr string
	RESTAddr  string
	// PID is the back end's process id, for benchmarks that pin it to a core.
	PID int
}

// StartBackend runs bin/voice-backend on free ports.
func StartBackend(t T) *Backend {
	t.Helper()
	b := &Backend{
		VoiceAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		RESTAddr:  "127.0.0.1:" + strconv.Itoa(FreePort(t)),
	}
	cmd := exec.Command(Binary(t, "voice-backend"), "-addr", b.VoiceAddr, "-rest-addr", b.RESTAddr)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.PID = cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for _, addr := range []string{b.VoiceAddr, b.RESTAddr} {
		if err := WaitListening(addr, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// WaitListening waits until something accepts TCP connections on addr.
func WaitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ControlPlane is an in-process control plane.
type ControlPlane struct {
	*app.App
	PolicyFile string
	stop       func()
}

// ControlPlaneOptions configure StartControlPlane.
type ControlPlaneOptions struct {
	PolicyFile string
	// XDSAddr defaults to a free port; a restart passes the old address so
	// that Envoy reconnects to the new process.
	XDSAddr string
	// AdminToken, when set, enables the admin API on a free port.
	AdminToken string
	// WasmPath defaults to WasmModule.
	WasmPath string
	// NativePath, when set, serves the dynamic module to the nodes that
	// ask for it (EnvoyOptions.Filter). Filter FilterNative defaults it to
	// NativeModule.
	NativePath string
	Filter     FilterBuild
	// Fleet, when set, serves xDS and modules as to remote Envoys.
	Fleet *Fleet
	// Metrics serves /metrics on a free port (App.MetricsAddr).
	Metrics bool
	// Log, when set, receives the control plane's log, as text.
	Log io.Writer
}

// Fleet configures a control plane for remote Envoys: mutual TLS with the
// certificates in CertDir (certs.Generate's layout; empty: plaintext on
// loopback) and the module server on a free port.
type Fleet struct {
	CertDir string
	Limits  *xds.Limits
}

// StartControlPlane runs a control plane until Stop or the end of the test.
func StartControlPlane(t T, opts ControlPlaneOptions) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := app.Config{
		PolicyFile: opts.PolicyFile, XDSAddr: opts.XDSAddr, WasmPath: opts.WasmPath, NativePath: opts.NativePath,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if cfg.XDSAddr == "" {
		cfg.XDSAddr = "127.0.0.1:0"
	}
	if cfg.WasmPath == "" {
		cfg.WasmPath = WasmModule(t)
	}
	if opts.Filter == FilterNative && cfg.NativePath == "" {
		cfg.NativePath = NativeModule(t)
	}
	if f := opts.Fleet; f != nil {
		cfg.ModulesAddr, cfg.XDSLimits = "127.0.0.1:0", f.Limits
		if f.CertDir != "" {
			files := certs.Files{Dir: f.CertDir}
			cfg.XDSTLS.Cert, cfg.XDSTLS.Key = files.Server()
			cfg.XDSTLS.ClientCA, _ = files.CA()
		}
	}
	if os.Getenv("DIRECTPIPE_TEST_LOG") != "" {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if opts.Log != nil {
		cfg.Log = slog.New(slog.NewTextHandler(opts.Log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if opts.Metrics {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	if opts.AdminToken != "" {
		cfg.AdminAddr, cfg.AdminToken = "127.0.0.1:0", opts.AdminToken
	}
	a, err := app.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &ControlPlane{App: a, PolicyFile: opts.PolicyFile, stop: stop}
}

// Stop ends the control plane and waits for it.
func (c *ControlPlane) Stop() { c.stop() }

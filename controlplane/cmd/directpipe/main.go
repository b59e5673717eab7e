// Command directpipe is the control plane: it serves the policy file to
// Envoy over xDS and applies every change to the file.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/directpipe/directpipe/controlplane/app"
)

func main() {
	var (
		policyFile  = flag.String("policy", "examples/policy.yaml", "route policy file (YAML), watched for changes")
		xdsAddr     = flag.String("xds-addr", "127.0.0.1:18000", "ADS gRPC listen address")
		metricsAddr = flag.String("metrics-addr", "127.0.0.1:18002", "Prometheus /metrics listen address; empty disables")
		wasmPath    = flag.String("wasm", "bin/handshake.wasm", "handshake Wasm module path, as Envoy sees it")
		logLevel    = flag.String("log-level", "info", "debug, info, warn or error")
	)
	flag.Parse()
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "directpipe: -log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(log, *policyFile, *xdsAddr, *metricsAddr, *wasmPath); err != nil {
		log.Error("control plane stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, policyFile, xdsAddr, metricsAddr, wasmPath string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Envoy resolves the module path itself, from its own working directory.
	wasm, err := filepath.Abs(wasmPath)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, app.Config{
		PolicyFile: policyFile, XDSAddr: xdsAddr, MetricsAddr: metricsAddr, WasmPath: wasm, Log: log,
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

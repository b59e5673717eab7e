// Command dpctl is the directpipe control plane's CLI; see package dpctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/directpipe/directpipe/controlplane/dpctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dpctl.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

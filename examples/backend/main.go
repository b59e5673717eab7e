// Command voice-backend is the example back end: a WebSocket echo at
// /v1/voice (with /debug/handshakes) on one port and a REST API at /api/ on
// another, so the example policy has two clusters.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/directpipe/directpipe/examples/backend/voiceserver"
)

func main() {
	voiceAddr := flag.String("addr", "127.0.0.1:8081", "voice (WebSocket) listen address")
	restAddr := flag.String("rest-addr", "127.0.0.1:8082", "REST listen address")
	window := flag.Duration("drain-window", voiceserver.DefaultDrainWindow, "on SIGTERM, send each live stream Close 1001 at a random moment of this window, then stop")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s := voiceserver.New(log)
	ctx, stop := drainOnSignal(s, *window, log)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	for addr, h := range map[string]http.Handler{*voiceAddr: s.VoiceHandler(), *restAddr: s.RESTHandler()} {
		srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("listen", "addr", addr, "error", err)
			os.Exit(1)
		}
		g.Go(func() error {
			if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return srv.Shutdown(shutdown)
		})
	}
	log.Info("voice back end serving", "voice", *voiceAddr, "rest", *restAddr)
	if err := g.Wait(); err != nil {
		log.Error("back end stopped", "error", err)
		os.Exit(1)
	}
}

// drainOnSignal returns a context that ends once a SIGTERM or interrupt
// has drained the back end: its streams were asked to go away over window
// (and the callers to come back elsewhere), and none is left, or the
// window and a second more have passed.
func drainOnSignal(s *voiceserver.Server, window time.Duration, log *slog.Logger) (context.Context, func()) {
	sigs, stopSigs := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sigs.Done()
		s.Drain(window)
		end := time.Now().Add(window + time.Second)
		for s.Streams().Live > 0 && time.Now().Before(end) {
			time.Sleep(100 * time.Millisecond)
		}
		log.Info("drained", "streams_left", s.Streams().Live)
		cancel()
	}()
	return ctx, func() { stopSigs(); cancel() }
}

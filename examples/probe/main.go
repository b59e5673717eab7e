// Command probe is a voice agent's caller: N concurrent WebSocket streams,
// each sending 20 ms audio frames in real time, measuring round trip,
// handshake time, reordering, loss and disconnects.
//
//	probe -url ws://127.0.0.1:10000/v1/voice -token "$(make -s token)" -streams 10 -frames 500
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

func main() {
	var (
		url      = flag.String("url", "ws://127.0.0.1:10000/v1/voice", "WebSocket URL")
		token    = flag.String("token", "", "bearer token sent in the Authorization header")
		streams  = flag.Int("streams", 1, "concurrent streams")
		frames   = flag.Int("frames", 250, "frames per stream (250 x 20 ms = 5 s of audio)")
		interval = flag.Duration("interval", 20*time.Millisecond, "time between frames; 0 sends as fast as possible")
		size     = flag.Int("frame-bytes", voiceprobe.DefaultFrameBytes, "frame size (640 = 20 ms of 16 kHz 16-bit mono)")
		output   = flag.String("o", "text", "text or json")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := voiceprobe.Config{
		URL: *url, Streams: *streams, Frames: *frames, Interval: *interval, FrameBytes: *size,
		Progress: progressBar(os.Stderr),
	}
	if *token != "" {
		cfg.Header = http.Header{"Authorization": {"Bearer " + *token}}
	}
	res, err := voiceprobe.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	switch *output {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
	default:
		printSummary(os.Stdout, res)
	}
	if res.FailedDials > 0 || res.Disconnects > 0 || res.Lost > 0 {
		os.Exit(1)
	}
}

// progressBar draws on a terminal only, so piped output stays clean.
func progressBar(w *os.File) func(int64, int64) {
	info, err := w.Stat()
	if err != nil || info.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	last := time.Time{}
	return func(done, total int64) {
		if done != total && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		const width = 40
		filled := int(int64(width) * done / total)
		fmt.Fprintf(w, "\r[%s%s] %d/%d frames", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total)
		if done == total {
			fmt.Fprintln(w)
		}
	}
}

func printSummary(w io.Writer, r *voiceprobe.Result) {
	fmt.Fprintf(w, "streams %d  frames sent %d  received %d  reordered %d  lost %d  corrupted %d  disconnects %d  failed handshakes %d\n",
		len(r.Streams), r.Sent, r.Received, r.Reordered, r.Lost, r.Corrupted, r.Disconnects, r.FailedDials)
	fmt.Fprintf(w, "round trip  p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", r.RTT.P50, r.RTT.P90, r.RTT.P99, r.RTT.P999, r.RTT.Max)
	fmt.Fprintf(w, "handshake   p50 %v  p99 %v\n", r.Handshake.P50, r.Handshake.P99)
	for i, s := range r.Streams {
		if s.Error != "" {
			fmt.Fprintf(w, "stream %d: %s\n", i, s.Error)
		}
	}
}

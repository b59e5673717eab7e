package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// runVoiceProbe opens streams authenticated callers to url and keeps them
// talking; the function it returns stops them once and gives their
// result (nil on later calls, so it can also be deferred).
func runVoiceProbe(ctx context.Context, t *testing.T, url string, streams int) func() *voiceprobe.Result {
	t.Helper()
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, err := voiceprobe.Run(ctx, voiceprobe.Config{
			URL:     url,
			Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: streams, Frames: 100000, Interval: 20 * time.Millisecond,
			Stop: stop, Drain: 10 * time.Second,
		})
		if err != nil {
			t.Error(err)
		}
		results <- res
	}()
	stopped := false
	return func() *voiceprobe.Result {
		if stopped {
			return nil
		}
		stopped = true
		close(stop)
		return <-results
	}
}

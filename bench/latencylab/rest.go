//go:build linux

package latencylab

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// restPerFrame sends every frame as its own POST through Envoy's REST route,
// as a request/response gateway makes a client do, over a shared pool of
// keep-alive connections. Frames sent 20 ms apart may come back in another
// order; the reordering is counted, not hidden.
func (l *lab) restPerFrame(envoy procs) *Path {
	p := &Path{Name: "rest-per-frame", Description: "one HTTP POST per frame through the REST route, pooled connections", Available: true}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: l.cfg.Streams * 4,
			MaxConnsPerHost:     l.cfg.Streams * 4,
		},
	}
	defer client.CloseIdleConnections()
	url := l.stack.url("http", "/api/echo")
	cpu0 := cpuSeconds(envoy)

	var (
		mu      sync.Mutex
		samples []time.Duration
		streams sync.WaitGroup
	)
	for range l.cfg.Streams {
		streams.Add(1)
		go func() {
			defer streams.Done()
			var (
				seqMu    sync.Mutex
				seq      voiceprobe.Sequence
				inflight sync.WaitGroup
				lost     int
			)
			tick := time.NewTicker(max(l.cfg.Interval, time.Millisecond))
			defer tick.Stop()
			for i := range l.cfg.Frames {
				frame := make([]byte, voiceprobe.DefaultFrameBytes)
				binary.BigEndian.PutUint64(frame, uint64(i))
				inflight.Add(1)
				go func() {
					defer inflight.Done()
					start := time.Now()
					resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(frame))
					ok := err == nil
					if ok {
						body, rerr := io.ReadAll(resp.Body)
						resp.Body.Close()
						ok = rerr == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, frame)
					}
					rtt := time.Since(start)
					seqMu.Lock()
					if ok {
						seq.Observe(uint64(i))
					} else {
						lost++
					}
					seqMu.Unlock()
					if ok {
						mu.Lock()
						samples = append(samples, rtt)
						mu.Unlock()
					}
				}()
				<-tick.C
			}
			inflight.Wait()
			mu.Lock()
			p.Sent += l.cfg.Frames
			p.Received += seq.Received
			p.Reordered += seq.Reordered
			p.Lost += lost
			mu.Unlock()
		}()
	}
	streams.Wait()
	p.setCPU(envoy, cpu0, p.Received)
	p.RTT = voiceprobe.Summarize(samples)
	p.samples = samples
	return p
}

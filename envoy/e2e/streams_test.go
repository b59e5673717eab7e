package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/backend/voiceserver"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
	"google.golang.org/protobuf/encoding/protojson"
)

// backendStreams reads a back end's own count of its streams.
func backendStreams(t testing.TB, voiceAddr string) voiceserver.StreamCounts {
	t.Helper()
	resp, err := http.Get("http://" + voiceAddr + "/debug/streams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c voiceserver.StreamCounts
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// listStreams is `dpctl top -o json`, decoded.
func (s *stack) listStreams() *adminv1.ListStreamsResponse {
	s.t.Helper()
	code, out, errb := s.dpctl("top", "-o", "json")
	if code != 0 {
		s.t.Fatalf("dpctl top: exit %d: %s", code, errb)
	}
	var resp adminv1.ListStreamsResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		s.t.Fatalf("dpctl top -o json: %v\n%s", err, out)
	}
	return &resp
}

func liveOn(resp *adminv1.ListStreamsResponse, endpoint string) uint64 {
	var n uint64
	for _, r := range resp.GetStreams() {
		if r.GetEndpoint() == endpoint {
			n += r.GetLive()
		}
	}
	return n
}

// TestDrainCutsNoCall: two back ends, 50 live streams through Envoy, and
// one back end drained. The control plane marks it DRAINING by EDS, and no
// new stream lands on it from then on (its own count of accepted
// streams). The back end sends its streams Close 1001 over a window; every
// one of them reconnects, through Envoy, to the other back end (the probe
// prints the p99 reconnect time); no frame is lost on the streams it did
// not close; `dpctl drain --wait` shows the fleet-wide count, from Envoy's
// load reports, fall to 0 and the endpoint leave EDS; and no listener
// changes on the way.
func TestDrainCutsNoCall(t *testing.T) {
	other := testkit.StartBackend(t)
	s := newStack(t, false, func(p *policyParams) {
		p.VoiceEndpoints = append(p.VoiceEndpoints, other.VoiceAddr)
	})
	drained, kept := s.backend.VoiceAddr, other.VoiceAddr
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const n = 50
	stop := make(chan struct{})
	type probeRun struct {
		res *voiceprobe.Result
		err error
	}
	results := make(chan probeRun, 1)
	go func() {
		res, err := voiceprobe.Run(ctx, voiceprobe.Config{
			URL:     s.listenURL("ws", "/v1/voice"),
			Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: n, Frames: 6000, Interval: 20 * time.Millisecond,
			Stop: stop, Reconnect: true, ReconnectJitter: 500 * time.Millisecond,
		})
		results <- probeRun{res, err}
	}()

	// Every stream is up on one back end or the other, by their own counts.
	var before, beforeOther voiceserver.StreamCounts
	for {
		before, beforeOther = backendStreams(t, drained), backendStreams(t, kept)
		if before.Live+beforeOther.Live == n {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("streams never all came up: %d + %d live", before.Live, beforeOther.Live)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if before.Live == 0 || beforeOther.Live == 0 {
		t.Fatalf("round robin left a back end empty: %d and %d", before.Live, beforeOther.Live)
	}
	// The control plane counts them too, from the Envoys' load reports.
	for {
		resp := s.listStreams()
		if liveOn(resp, drained) == uint64(before.Live) && liveOn(resp, kept) == uint64(beforeOther.Live) {
			t.Logf("dpctl top before the drain:\n%s", s.top())
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("load reports never showed %d and %d live streams:\n%s", before.Live, beforeOther.Live, s.top())
		}
		time.Sleep(200 * time.Millisecond)
	}
	modified, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
	if err != nil {
		t.Fatal(err)
	}

	// The operator drains the endpoint and waits.
	waited := make(chan string, 1)
	go func() {
		code, out, errb := s.dpctl("drain", "voice", drained, "--deadline", "2m", "--wait")
		if code != 0 {
			t.Errorf("dpctl drain --wait: exit %d: %s", code, errb)
		}
		waited <- out
	}()
	// Once every Envoy has the endpoint DRAINING, the back end is asked to
	// end its calls (the order the contract asks for: otherwise a caller
	// could reconnect to the endpoint it just left).
	for !s.hostDraining(ctx, drained) {
		if ctx.Err() != nil {
			t.Fatal("Envoy never marked the endpoint DRAINING")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Post("http://"+drained+"/debug/drain?window=3s", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("asking the back end to drain: %v %v", resp, err)
	}
	resp.Body.Close()

	var out string
	select {
	case out = <-waited:
	case <-ctx.Done():
		t.Fatal("dpctl drain --wait never returned")
	}
	t.Logf("dpctl drain --wait:\n%s", out)
	if !strings.Contains(out, "live 0") || !strings.Contains(out, "drained: out of EDS") || !strings.Contains(out, "(no streams)") {
		t.Errorf("dpctl drain --wait did not show the count reach 0 and the endpoint leave EDS:\n%s", out)
	}
	// The streams that moved run on the other back end for a while.
	time.Sleep(time.Second)
	close(stop)
	var res *voiceprobe.Result
	select {
	case r := <-results:
		if r.err != nil {
			t.Fatalf("probe: %v", r.err)
		}
		res = r.res
	case <-ctx.Done():
		t.Fatal("the probe never finished")
	}

	after, afterOther := backendStreams(t, drained), backendStreams(t, kept)
	if after.Accepted != before.Accepted {
		t.Errorf("the drained back end accepted %d streams after the drain started", after.Accepted-before.Accepted)
	}
	var reconnects []time.Duration
	goAways, lostAtClose := 0, 0
	for i, st := range res.Streams {
		goAways += st.GoAways
		lostAtClose += st.LostAtGoAway
		reconnects = append(reconnects, st.Reconnects...)
		switch {
		case len(st.Reconnects) != st.GoAways:
			t.Errorf("stream %d: %d Close 1001, %d reconnects (%s)", i, st.GoAways, len(st.Reconnects), st.Error)
		case st.Disconnected || st.Lost > 0 || st.Reordered > 0 || st.Corrupted > 0:
			t.Errorf("stream %d: disconnected %v, lost %d, reordered %d, corrupted %d (%s)", i, st.Disconnected, st.Lost, st.Reordered, st.Corrupted, st.Error)
		}
	}
	if goAways != before.Live || int64(goAways) != after.GoAways {
		t.Errorf("%d streams were on the drained back end, it sent %d Close 1001, the probe saw %d", before.Live, after.GoAways, goAways)
	}
	if got, want := afterOther.Accepted-beforeOther.Accepted, int64(len(reconnects)); got != want {
		t.Errorf("the other back end accepted %d streams during the drain, want the %d reconnects", got, want)
	}
	slices.Sort(reconnects)
	t.Logf("drain: %d streams moved by Close 1001 (jitter up to 500ms), reconnect p50 %s, p99 %s, max %s; %d frames in flight at a close; %d frames lost elsewhere",
		len(reconnects), voiceprobe.Percentile(reconnects, 50), voiceprobe.Percentile(reconnects, 99), voiceprobe.Percentile(reconnects, 100), lostAtClose, res.Lost)

	final := s.listStreams()
	if n := liveOn(final, drained); n != 0 {
		t.Errorf("dpctl top shows %d live streams on the drained endpoint", n)
	}
	var d *adminv1.Drain
	for _, x := range final.GetDrains() {
		if x.GetEndpoint() == drained {
			d = x
		}
	}
	if d.GetState() != adminv1.DrainState_DRAINED || d.GetEndedBy() != "no_streams" {
		t.Errorf("drain = %v, want DRAINED by no_streams", d)
	}
	if m, _ := s.envoy.Stat(ctx, "listener_manager.listener_modified"); m != modified {
		t.Errorf("listener_modified moved from %d to %d during the drain", modified, m)
	}

	// --cancel takes the endpoint back: new streams reach it again.
	if code, out, errb := s.dpctl("drain", "voice", drained, "--cancel"); code != 0 {
		t.Fatalf("dpctl drain --cancel: exit %d: %s %s", code, out, errb)
	}
	for !s.hostIn(ctx, drained) {
		if ctx.Err() != nil {
			t.Fatal("the endpoint never came back into EDS")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// top is `dpctl top` as a person reads it.
func (s *stack) top() string {
	_, out, errb := s.dpctl("top")
	return out + errb
}

// hostStatus returns the EDS health status Envoy holds for a voice
// endpoint, "" when Envoy has no such host.
func (s *stack) hostStatus(ctx context.Context, endpoint string) string {
	s.t.Helper()
	for _, h := range clusterHosts(ctx, s.t, s.envoy, "voice") {
		if h.address == endpoint {
			return cmpOr(h.edsStatus, "HEALTHY")
		}
	}
	return ""
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (s *stack) hostDraining(ctx context.Context, endpoint string) bool {
	return s.hostStatus(ctx, endpoint) == "DRAINING"
}

func (s *stack) hostIn(ctx context.Context, endpoint string) bool {
	return s.hostStatus(ctx, endpoint) == "HEALTHY"
}

// TestDrainDeadlineLeavesStreamsUp: a drain whose back end never ends its
// calls takes the endpoint out of EDS at the deadline, and that cuts
// nothing: Envoy closes no live stream when a host leaves EDS, so the
// calls go on, frames intact, until a peer ends them. Only the count is
// lost: load reports cover the hosts EDS lists.
func TestDrainDeadlineLeavesStreamsUp(t *testing.T) {
	other := testkit.StartBackend(t)
	s := newStack(t, false, func(p *policyParams) {
		p.VoiceEndpoints = append(p.VoiceEndpoints, other.VoiceAddr)
	})
	drained := s.backend.VoiceAddr
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 6
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, _ := voiceprobe.Run(ctx, voiceprobe.Config{
			URL:     s.listenURL("ws", "/v1/voice"),
			Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: n, Frames: 3000, Interval: 20 * time.Millisecond, Stop: stop,
		})
		results <- res
	}()
	var before voiceserver.StreamCounts
	for {
		before = backendStreams(t, drained)
		if before.Live+backendStreams(t, other.VoiceAddr).Live == n {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("streams never all came up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, out, errb := s.dpctl("drain", "voice", drained, "--deadline", "3s", "--wait")
	if code != 0 || !strings.Contains(out, "(deadline)") {
		t.Fatalf("dpctl drain --deadline 3s --wait: exit %d:\n%s%s", code, out, errb)
	}
	t.Logf("dpctl drain --deadline 3s --wait:\n%s", out)
	if got := s.hostStatus(ctx, drained); got != "" {
		t.Errorf("after the deadline Envoy still has the endpoint, %s", got)
	}
	// The calls on it go on after it left EDS.
	time.Sleep(2 * time.Second)
	if live := backendStreams(t, drained).Live; live != before.Live {
		t.Errorf("%d streams were on the endpoint, %d are left after the deadline", before.Live, live)
	}
	close(stop)
	res := <-results
	if res.Disconnects != 0 || res.Lost != 0 || res.FailedDials != 0 {
		t.Errorf("after the deadline: %d disconnects, %d lost frames, %d failed dials", res.Disconnects, res.Lost, res.FailedDials)
	}
	if after := backendStreams(t, drained); after.Accepted != before.Accepted {
		t.Errorf("the drained endpoint accepted %d streams", after.Accepted-before.Accepted)
	}
}

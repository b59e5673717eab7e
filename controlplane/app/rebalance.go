package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/balance"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/streams"
	"github.com/directpipe/directpipe/controlplane/translate"
)

const (
	// DefaultShedWindow is how long the back ends spread a rebalance's
	// closes over, so that the callers do not all come back at once.
	DefaultShedWindow = 10 * time.Second
	maxShedWindow     = 10 * time.Minute
	// askTimeout bounds one back end's answer to a shed request.
	askTimeout = 5 * time.Second
	// maxAnswerBytes bounds what is read of that answer.
	maxAnswerBytes = 4 << 10
	// reconnectSettle is how long after a shed's window its callers are
	// expected to have come back (their reconnect jitter) and been
	// counted (a load report or two).
	reconnectSettle = 5 * time.Second
)

// Rebalance plans how many streams each endpoint of a least_streams back
// end above its share (the mean, or by capacity) should end (balance.Shed
// over the fleet's counts) and, unless dryRun, asks each of their back
// ends to end that many with Close 1001 over window, at the back end's
// drain_path. The
// callers reconnect; the weights, brought up to date first, send them to
// the endpoints with room.
func (a *App) Rebalance(ctx context.Context, backend string, window time.Duration, dryRun bool) (*adminv1.RebalanceResponse, error) {
	if window == 0 {
		window = DefaultShedWindow
	}
	if window < 0 || window > maxShedWindow {
		return nil, fmt.Errorf("%w: window %s: want up to %s", admin.ErrInvalidArgument, window, maxShedWindow)
	}
	a.mu.Lock()
	b := backendNamed(a.served.Policy, backend)
	if b == nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: no back end %q", admin.ErrNotFound, backend)
	}
	if b.GetLb() != policy.LBLeastStreams {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: back end %q balances by %q: rebalancing needs lb %q, or the streams it ends would reconnect anywhere, the busiest endpoints included",
			admin.ErrInvalidArgument, backend, lbName(b), policy.LBLeastStreams)
	}
	if !dryRun && b.GetDrainPath() == "" {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: back end %q has no drain_path: the control plane has nowhere to ask it to end streams (--dry-run shows the plan)",
			admin.ErrInvalidArgument, backend)
	}
	resp := a.shedPlan(b)
	resp.Window = durationpb.New(window)
	if !dryRun {
		// The callers that reconnect must find weights that send them to
		// the endpoints short of streams, from the counts as they are now:
		// weights that place this many, not an average batch, which would
		// spread them over the pool, the endpoints they left included.
		var shed int
		for _, st := range resp.GetSteps() {
			shed += int(st.GetShed())
		}
		a.weighing.expect(backend, shed, time.Now().Add(window+reconnectSettle))
		if a.weighStreams() {
			a.serveAgain(ctx, "stream weights")
		}
	}
	a.mu.Unlock()
	if dryRun {
		return resp, nil
	}
	a.askToShed(ctx, b.GetDrainPath(), window, resp.GetSteps())
	resp.Ran = true
	a.log.Info("rebalance asked the back ends to end streams", "backend", backend, "window", window, "steps", len(resp.GetSteps()))
	return resp, nil
}

// shedPlan is the plan over the endpoints that take new streams; a.mu is
// held.
func (a *App) shedPlan(b *policyv1.Backend) *adminv1.RebalanceResponse {
	counts, _ := a.fleetCounts()
	drains := a.drains.phases()[b.GetName()]
	draining := map[string]bool{}
	for _, ep := range b.GetDrainingEndpoints() {
		draining[ep] = true
	}
	resp := &adminv1.RebalanceResponse{Backend: b.GetName()}
	var eps []balance.Endpoint
	for _, ep := range b.GetEndpoints() {
		if draining[ep] || drains[ep] != 0 {
			continue
		}
		live := streams.Live(counts, b.GetName(), ep)
		eps = append(eps, balance.Endpoint{Address: ep, Live: int(min(live, 1<<31-1)), MaxStreams: translate.EndpointCapacity(b, ep)})
		resp.Steps = append(resp.Steps, &adminv1.RebalanceStep{Endpoint: ep, Live: live})
	}
	for i, n := range balance.Shed(eps) {
		resp.Steps[i].Shed = uint64(n)
	}
	return resp
}

// askToShed asks, at once, each endpoint's back end to end its share of
// streams over window, and records what each answered.
func (a *App) askToShed(ctx context.Context, path string, window time.Duration, steps []*adminv1.RebalanceStep) {
	client := &http.Client{
		Timeout: askTimeout,
		// A back end answers itself; a redirect would send the request
		// somewhere the policy does not name.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var wg sync.WaitGroup
	for _, st := range steps {
		if st.GetShed() == 0 {
			continue
		}
		wg.Go(func() {
			n, err := askOne(ctx, client, st.GetEndpoint(), path, st.GetShed(), window)
			if err != nil {
				st.Error = err.Error()
				a.log.Warn("a back end was not asked to end streams", "endpoint", st.GetEndpoint(), "error", err)
				return
			}
			st.Asked = n
		})
	}
	wg.Wait()
}

func askOne(ctx context.Context, client *http.Client, endpoint, path string, n uint64, window time.Duration) (uint64, error) {
	q := url.Values{"streams": {strconv.FormatUint(n, 10)}, "window": {window.String()}}
	u := (&url.URL{Scheme: "http", Host: endpoint, Path: path, RawQuery: q.Encode()}).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("asking %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return 0, fmt.Errorf("reading the answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s answered %s: %.200s", u, resp.Status, body)
	}
	var answer struct {
		Streams *uint64 `json:"streams"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Streams == nil {
		return 0, errors.Join(fmt.Errorf("%s answered %.200q, not {\"streams\": N}", u, body), err)
	}
	return *answer.Streams, nil
}

func backendNamed(p *policyv1.Policy, name string) *policyv1.Backend {
	for _, b := range p.GetBackends() {
		if b.GetName() == name {
			return b
		}
	}
	return nil
}

func lbName(b *policyv1.Backend) string {
	if b.GetLb() == "" {
		return policy.LBRoundRobin
	}
	return b.GetLb()
}

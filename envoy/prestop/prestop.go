// Package prestop is the preStop hook of an Envoy pod: stop taking new
// streams, then wait for the live ones to end, so that a rollout cuts no
// call. It talks to Envoy's admin interface only, over its Unix socket or
// TCP, and needs nothing in the Envoy image: envoy-bootstrap runs it as
// `envoy-bootstrap prestop`.
package prestop

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultAdmin is where the Helm chart puts Envoy's admin socket.
const DefaultAdmin = "unix:/var/run/envoy/admin.sock"

// Options say where Envoy's admin is and how long to wait.
type Options struct {
	// Admin is unix:/path/to/socket or http://host:port.
	Admin string
	// Deadline is how long to wait for the streams; keep it below the
	// pod's terminationGracePeriodSeconds.
	Deadline time.Duration
	// Poll is how often the live streams are counted.
	Poll time.Duration
	// Out receives one line per count, as the kubelet shows a hook's
	// output in its FailedPreStopHook event.
	Out io.Writer
}

// ErrAdmin means Envoy's admin did not answer; nothing was changed.
var ErrAdmin = errors.New("the Envoy admin did not answer")

// ErrDeadline means the deadline came with streams still live; Envoy's
// exit then cuts them.
var ErrDeadline = errors.New("deadline reached with live streams")

// maxStatsBytes bounds the admin's answer: the filtered stats of a large
// Envoy are kilobytes.
const maxStatsBytes = 4 << 20

// Run fails Envoy's readiness, drains its listeners gracefully, and waits
// until no stream is live (nil), the deadline passes (ErrDeadline), or
// ctx ends.
//
// Readiness fails at once: /ready and the health check listener answer
// 503, so the Service takes the pod out of its endpoints. The graceful
// drain then discourages requests on every listener for Envoy's drain
// time and closes the listeners at its end: connections that still arrive
// are refused. (Not inboundonly: that needs traffic_direction on the
// listeners, which directpipe leaves unset; the admin listener is never
// drained.) Upgraded connections (WebSockets) and tcp_proxy connections
// are cut by neither; they go on until a peer ends them.
func Run(ctx context.Context, o Options) error {
	a, err := newAdmin(o.Admin)
	if err != nil {
		return err
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if err := a.post(ctx, "/healthcheck/fail"); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAdmin, o.Admin, err)
	}
	if err := a.post(ctx, "/drain_listeners?graceful"); err != nil {
		fmt.Fprintf(o.Out, "prestop: drain_listeners failed (%v); waiting for the streams anyway\n", err)
	}
	start := time.Now()
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for {
		n, err := a.liveStreams(ctx)
		count := strconv.Itoa(n)
		switch {
		case err != nil:
			fmt.Fprintf(o.Out, "prestop: cannot read Envoy's stats: %v\n", err)
			count = "unknown"
		case n <= 0:
			fmt.Fprintf(o.Out, "prestop: no live streams after %s\n", time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		if time.Since(start) >= o.Deadline {
			fmt.Fprintf(o.Out, "prestop: deadline of %s reached with %s live streams\n", o.Deadline, count)
			return fmt.Errorf("%w: %s after %s", ErrDeadline, count, o.Deadline)
		}
		fmt.Fprintf(o.Out, "prestop: %s live streams\n", count)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// admin is a client of Envoy's admin interface.
type admin struct {
	base   string
	client *http.Client
}

func newAdmin(addr string) (*admin, error) {
	a := &admin{client: &http.Client{Timeout: 5 * time.Second}}
	switch {
	case strings.HasPrefix(addr, "unix:"):
		sock := strings.TrimPrefix(addr, "unix:")
		if sock == "" {
			return nil, errors.New("prestop: admin unix: needs a socket path")
		}
		var d net.Dialer
		a.client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", sock)
		}}
		a.base = "http://envoy-admin"
	case strings.HasPrefix(addr, "http://"):
		a.base = strings.TrimSuffix(addr, "/")
	default:
		return nil, fmt.Errorf("prestop: admin %q: want unix:/path/to/socket or http://host:port", addr)
	}
	return a, nil
}

func (a *admin) post(ctx context.Context, path string) error {
	_, err := a.do(ctx, http.MethodPost, path)
	return err
}

func (a *admin) do(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxStatsBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStatsBytes {
		return nil, fmt.Errorf("%s: answer larger than %d bytes", path, maxStatsBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", path, resp.Status)
	}
	return b, nil
}

// statsFilter selects the gauges LiveStreams reads.
const statsFilter = `^(listener|http)\..*\.downstream_(cx|rq)_active$`

func (a *admin) liveStreams(ctx context.Context) (int, error) {
	b, err := a.do(ctx, http.MethodGet, "/stats?filter="+url.QueryEscape(statsFilter))
	if err != nil {
		return 0, err
	}
	return LiveStreams(strings.NewReader(string(b)))
}

var (
	ownListener = regexp.MustCompile(`^(listener|http)\.(admin|directpipe_ready)\.`)
	perWorker   = regexp.MustCompile(`\.worker_[0-9]+\.`)
)

// LiveStreams counts the streams in Envoy's stats (the admin's /stats text
// format): requests in progress on HTTP connection managers (a WebSocket
// is one for its whole life, an idle keep-alive connection none) plus
// connections on listeners that run no connection manager (tcp mode).
// Envoy's own admin and readiness listeners are left out, and so are the
// per-worker copies of each gauge.
func LiveStreams(stats io.Reader) (int, error) {
	n := 0
	sc := bufio.NewScanner(stats)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok || ownListener.MatchString(name) || perWorker.MatchString(name) {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			continue // a histogram or text stat: not a gauge of ours
		}
		switch {
		case strings.HasPrefix(name, "listener.") && strings.HasSuffix(name, ".downstream_cx_active"):
			n += v
		case strings.HasPrefix(name, "http.") && strings.HasSuffix(name, ".downstream_cx_active"):
			n -= v
		case strings.HasPrefix(name, "http.") && strings.HasSuffix(name, ".downstream_rq_active"):
			n += v
		}
	}
	return n, sc.Err()
}

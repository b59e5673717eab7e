package prestop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLiveStreams(t *testing.T) {
	for _, tc := range []struct {
		name, stats string
		want        int
	}{
		{"nothing", "", 0},
		{"two WebSockets on the HTTP listener, one idle keep-alive connection",
			"listener.127.0.0.1_8080.downstream_cx_active: 3\nhttp.ingress.downstream_cx_active: 3\nhttp.ingress.downstream_rq_active: 2\n", 2},
		{"tcp mode: connections are streams",
			"listener.127.0.0.1_9000.downstream_cx_active: 4\n", 4},
		{"per-worker copies are not counted twice",
			"listener.127.0.0.1_9000.downstream_cx_active: 4\nlistener.127.0.0.1_9000.worker_0.downstream_cx_active: 1\nlistener.127.0.0.1_9000.worker_1.downstream_cx_active: 3\n", 4},
		{"admin and readiness listeners are Envoy's own",
			"listener.admin.downstream_cx_active: 1\nhttp.admin.downstream_rq_active: 1\nlistener.directpipe_ready.downstream_cx_active: 2\nhttp.directpipe_ready.downstream_rq_active: 1\n", 0},
		{"other lines are skipped",
			"garbage\nhttp.ingress.downstream_rq_active: No recorded values\nlistener.x.downstream_cx_active: 1\n", 1},
	} {
		got, err := LiveStreams(strings.NewReader(tc.stats))
		if err != nil || got != tc.want {
			t.Errorf("%s: %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
}

// fakeAdmin answers as Envoy's admin, with a stream count that goes down
// by one at each read, to zero; forever stays at its count.
type fakeAdmin struct {
	mu      sync.Mutex
	calls   []string
	live    int
	forever bool
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
	switch {
	case r.Method == http.MethodPost && (r.URL.Path == "/healthcheck/fail" || r.URL.Path == "/drain_listeners"):
	case r.Method == http.MethodGet && r.URL.Path == "/stats" && r.URL.Query().Get("filter") == statsFilter:
		fmt.Fprintf(w, "listener.127.0.0.1_9000.downstream_cx_active: %d\n", f.live)
		if !f.forever && f.live > 0 {
			f.live--
		}
	default:
		http.NotFound(w, r)
	}
}

func TestRun(t *testing.T) {
	// Over a Unix socket, as in the chart.
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAdmin{live: 2}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	defer srv.Close()
	var out bytes.Buffer
	if err := Run(context.Background(), Options{Admin: "unix:" + sock, Deadline: time.Minute, Poll: time.Millisecond, Out: &out}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := []string{"POST /healthcheck/fail", "POST /drain_listeners?graceful"}
	if len(f.calls) != 5 || f.calls[0] != want[0] || f.calls[1] != want[1] {
		t.Errorf("admin calls %q: want %q, then three stats reads", f.calls, want)
	}
	if o := out.String(); !strings.Contains(o, "prestop: 2 live streams\nprestop: 1 live streams\nprestop: no live streams after 0s\n") {
		t.Errorf("output:\n%s", o)
	}

	// The deadline comes first: the streams are named and left alone.
	ts := httptest.NewServer(&fakeAdmin{live: 4, forever: true})
	defer ts.Close()
	out.Reset()
	err = Run(context.Background(), Options{Admin: ts.URL, Deadline: 20 * time.Millisecond, Poll: time.Millisecond, Out: &out})
	if !errors.Is(err, ErrDeadline) || !strings.Contains(out.String(), "deadline of 20ms reached with 4 live streams") {
		t.Errorf("deadline: %v\n%s", err, out.String())
	}

	// No admin: nothing to do, said so.
	err = Run(context.Background(), Options{Admin: "unix:" + filepath.Join(t.TempDir(), "none.sock"), Deadline: time.Second})
	if !errors.Is(err, ErrAdmin) {
		t.Errorf("no admin: %v", err)
	}
	for _, bad := range []string{"", "unix:", "tcp://127.0.0.1:1", "127.0.0.1:9901"} {
		if err := Run(context.Background(), Options{Admin: bad}); err == nil || errors.Is(err, ErrAdmin) {
			t.Errorf("admin %q: %v, want a usage error", bad, err)
		}
	}
}

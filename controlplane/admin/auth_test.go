package admin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestLoadOrCreateToken: the control plane creates a private token file,
// reads it back on the next start, and refuses to start on one that group
// or others may read.
func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "admin.token")
	tok, err := LoadOrCreateToken(path)
	if err != nil || tok == "" {
		t.Fatalf("create: %q, %v", tok, err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("created with %v, %v; want 0600", info.Mode(), err)
	}
	if again, err := LoadOrCreateToken(path); err != nil || again != tok {
		t.Fatalf("second start read %q, %v; want %q", again, err, tok)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateToken(path); err == nil || !strings.Contains(err.Error(), "has mode 0644") {
		t.Fatalf("a world-readable token file: %v, want a refusal", err)
	}
}

// TestFailedAuthIsCountedLoggedAndSlowed: each failure is counted; a
// peer's failures are held longer and longer, up to the maximum, logged
// at most once per logEvery, and forgotten on a success; another peer
// starts afresh.
func TestFailedAuthIsCountedLoggedAndSlowed(t *testing.T) {
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	a := newTokenAuth("right", AuthOptions{Log: slog.New(slog.NewTextHandler(&logs, nil)), Registry: reg, MaxDelay: time.Second})
	clock := time.Unix(1_700_000_000, 0)
	a.now = func() time.Time { return clock }
	var held []time.Duration
	a.sleep = func(_ context.Context, d time.Duration) error { held = append(held, d); return nil }
	call := func(addr, token string) error {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 40000 + len(held)}})
		if token != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
		}
		return a.check(ctx)
	}
	for range 6 {
		if status.Code(call("192.0.2.1", "wrong")) != codes.Unauthenticated {
			t.Fatal("a wrong token passed")
		}
		clock = clock.Add(time.Second)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	if !slices.Equal(held, want) {
		t.Errorf("held %v, want %v", held, want)
	}
	if got := testutil.ToFloat64(a.failures); got != 6 {
		t.Errorf("failures counted: %v, want 6", got)
	}
	if n := strings.Count(logs.String(), "admin API call refused"); n != 1 {
		t.Errorf("%d log lines for 6 failures within %s, want 1:\n%s", n, logEvery, logs.String())
	}
	clock = clock.Add(logEvery)
	held = nil
	call("192.0.2.1", "")
	if n := strings.Count(logs.String(), "admin API call refused"); n != 2 || !strings.Contains(logs.String(), "since_last_log=6") {
		t.Errorf("after %s: %d log lines:\n%s", logEvery, n, logs.String())
	}
	if err := call("192.0.2.2", "wrong"); err == nil || held[len(held)-1] != 100*time.Millisecond {
		t.Errorf("another peer is held %v", held)
	}
	if err := call("192.0.2.1", "right"); err != nil {
		t.Fatalf("the right token: %v", err)
	}
	held = nil
	call("192.0.2.1", "wrong")
	if held[0] != 100*time.Millisecond {
		t.Errorf("after a success the peer is held %v, want the first delay", held[0])
	}
	// The memory of failing peers is bounded.
	for i := range maxPeers + 10 {
		call(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "wrong")
	}
	if len(a.peers) > maxPeers {
		t.Errorf("%d peers remembered, more than %d", len(a.peers), maxPeers)
	}
}

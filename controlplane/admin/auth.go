package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/directpipe/directpipe/controlplane/statedir"
)

// LoadOrCreateToken returns the admin token stored at path, creating a new
// random one in a 0600 file on first start. An existing file must be
// private to its owner (statedir.ReadToken).
func LoadOrCreateToken(path string) (string, error) {
	tok, err := statedir.ReadToken(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create state dir: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate admin token: %w", err)
	}
	tok = base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateToken(path) // another process won the race
	}
	if err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write admin token: %w", err)
	}
	return tok, f.Close()
}

// tokenAuth checks the bearer token on every call. Both sides are hashed
// before the constant-time comparison so that neither the content nor the
// length of the token leaks through timing. Failures are counted, logged
// at most once per peer per logEvery, and answered later the more a peer
// has failed, so that guessing costs time.
type tokenAuth struct {
	want     [32]byte
	maxDelay time.Duration
	log      *slog.Logger
	failures prometheus.Counter
	now      func() time.Time
	sleep    func(context.Context, time.Duration) error

	mu    sync.Mutex
	peers map[string]*peerFailures
}

// peerFailures is one peer's run of failed authentications.
type peerFailures struct {
	n        int // failures since the last success or forgetAfter
	last     time.Time
	logged   time.Time
	unlogged int // failures since the last log line
}

const (
	// firstDelay doubles with each failure of a peer, up to the maximum.
	firstDelay = 100 * time.Millisecond
	// forgetAfter is how long a peer's failures are remembered.
	forgetAfter = 10 * time.Minute
	// logEvery is how often one peer's failures are logged at most.
	logEvery = 10 * time.Second
	// maxPeers bounds the failure memory; past it, the oldest runs go.
	maxPeers = 4096
)

// AuthOptions are what the admin API's authentication reports to.
type AuthOptions struct {
	Log *slog.Logger
	// Registry counts failures as directpipe_admin_auth_failures_total
	// (nil: nowhere).
	Registry prometheus.Registerer
	// MaxDelay is the longest a peer's failed call is held
	// (DefaultMaxDelay when zero).
	MaxDelay time.Duration
}

// DefaultMaxDelay is the longest a failed authentication is held: with it,
// a peer guesses at most one token per 5 s per connection once it has
// failed a handful of times.
const DefaultMaxDelay = 5 * time.Second

func newTokenAuth(token string, o AuthOptions) *tokenAuth {
	a := &tokenAuth{
		want: sha256.Sum256([]byte(token)), maxDelay: o.MaxDelay, log: o.Log, now: time.Now, sleep: sleepCtx,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "directpipe_admin_auth_failures_total",
			Help: "Admin API calls refused for a missing or wrong bearer token.",
		}),
		peers: map[string]*peerFailures{},
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.maxDelay <= 0 {
		a.maxDelay = DefaultMaxDelay
	}
	if o.Registry != nil {
		o.Registry.MustRegister(a.failures)
	}
	return a
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid bearer token")

func (a *tokenAuth) check(ctx context.Context) error {
	who := peerOf(ctx)
	if a.valid(ctx) {
		a.mu.Lock()
		delete(a.peers, who)
		a.mu.Unlock()
		return nil
	}
	a.failures.Inc()
	if err := a.sleep(ctx, a.failed(who)); err != nil {
		return status.FromContextError(err).Err()
	}
	return errUnauthenticated
}

func (a *tokenAuth) valid(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return false
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		return false
	}
	got := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(got[:], a.want[:]) == 1
}

// failed records a failure of peer who, logs it unless this peer was
// logged less than logEvery ago, and returns how long to hold the answer.
func (a *tokenAuth) failed(who string) time.Duration {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.peers[who]
	if f == nil || now.Sub(f.last) > forgetAfter {
		if f == nil && len(a.peers) >= maxPeers {
			a.forgetOldest()
		}
		f = &peerFailures{}
		a.peers[who] = f
	}
	f.n++
	f.last = now
	f.unlogged++
	if now.Sub(f.logged) >= logEvery {
		a.log.Warn("admin API call refused: missing or invalid bearer token", "peer", who, "failures", f.n, "since_last_log", f.unlogged)
		f.logged, f.unlogged = now, 0
	}
	d := firstDelay << min(f.n-1, 16)
	return min(d, a.maxDelay)
}

// forgetOldest drops the peer that failed longest ago; a.mu is held.
func (a *tokenAuth) forgetOldest() {
	var oldest string
	var at time.Time
	for who, f := range a.peers {
		if oldest == "" || f.last.Before(at) {
			oldest, at = who, f.last
		}
	}
	delete(a.peers, oldest)
}

// peerOf names the caller by address without its port: a client that
// reconnects keeps its record.
func peerOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		return ap.Addr().String()
	}
	return p.Addr.Network() + ":" + p.Addr.String()
}

// UnaryInterceptor refuses unary calls without the token.
func (a *tokenAuth) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// StreamInterceptor refuses streams without the token.
func (a *tokenAuth) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

// ServerOptions returns the interceptors that require token on every call,
// health and reflection included, and the bounds on a request's size and
// on what it holds (boundedCodec).
func ServerOptions(token string, o AuthOptions) []grpc.ServerOption {
	a := newTokenAuth(token, o)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.unary, refuseUndecodedUnary), grpc.ChainStreamInterceptor(a.stream, refuseUndecodedStream),
		grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.ForceServerCodecV2(newBoundedCodec()),
	}
}

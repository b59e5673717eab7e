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
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
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
// length of the token leaks through timing.
type tokenAuth struct{ want [32]byte }

func newTokenAuth(token string) *tokenAuth { return &tokenAuth{want: sha256.Sum256([]byte(token))} }

var errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid bearer token")

func (a *tokenAuth) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return errUnauthenticated
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		return errUnauthenticated
	}
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], a.want[:]) != 1 {
		return errUnauthenticated
	}
	return nil
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
// health and reflection included.
func ServerOptions(token string) []grpc.ServerOption {
	a := newTokenAuth(token)
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream)}
}

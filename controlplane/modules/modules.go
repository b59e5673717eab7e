// Package modules serves the handshake modules to Envoys, the Wasm module
// and the Envoy dynamic module (a shared library): each module by its
// sha256, from memory, over HTTPS on a port of its own, so that an Envoy
// needs no module file on its disk. It records who fetched what, so an
// operator can tell a module Envoy never got from one it refused.
package modules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/directpipe/directpipe/filter/elfbin"
)

// MaxModuleSize bounds a module file: the handshake modules are about
// 6 MB.
const MaxModuleSize = 64 << 20

// PathPrefix is where modules are served: PathPrefix + sha256 + ".wasm"
// for a Wasm module, + ".so" for a dynamic module.
const PathPrefix = "/modules/"

// Path is the URL path of a Wasm module.
func Path(sha string) string { return PathPrefix + sha + ".wasm" }

// NativePath is the URL path of a dynamic module.
func NativePath(sha string) string { return PathPrefix + sha + ".so" }

// Module is one module's bytes and their hash.
type Module struct {
	Name   string
	SHA256 string
	data   []byte
}

// Size is the module's length in bytes.
func (m Module) Size() int { return len(m.data) }

// Fetch is what the server knows about one node's downloads of a module.
type Fetch struct {
	Node     string
	SHA256   string
	Started  int
	Complete int
	Bytes    int64
	Last     time.Time
}

// Limits bound the server.
type Limits struct {
	// Concurrent downloads; more are answered 503 and Envoy retries later.
	Concurrent int
	// Nodes whose fetch records are kept; the oldest are forgotten.
	Nodes int
}

// DefaultLimits fit a fleet of a few thousand Envoys restarting at once.
var DefaultLimits = Limits{Concurrent: 32, Nodes: 4096}

// Store holds the modules being served, by hash. Each name keeps its
// current and previous module, so an Envoy that has not taken the new
// config yet can still fetch what it was sent.
type Store struct {
	limits Limits
	slots  chan struct{}

	mu       sync.Mutex
	byName   map[string][]Module // newest last, at most two
	fetches  map[string]*Fetch   // by node + "/" + sha
	order    []string            // fetch keys, oldest first
	notifier func(Fetch)
}

// NewStore returns an empty store.
func NewStore(l Limits) *Store {
	if l.Concurrent <= 0 {
		l.Concurrent = DefaultLimits.Concurrent
	}
	if l.Nodes <= 0 {
		l.Nodes = DefaultLimits.Nodes
	}
	return &Store{limits: l, slots: make(chan struct{}, l.Concurrent), byName: map[string][]Module{}, fetches: map[string]*Fetch{}}
}

// Load reads a module file and makes it the current module of name. It
// returns the module and whether it differs from the one it replaces.
func (s *Store) Load(name, file string) (Module, bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return Module{}, false, fmt.Errorf("modules: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxModuleSize+1))
	if err != nil {
		return Module{}, false, fmt.Errorf("modules: read %s: %w", file, err)
	}
	if len(data) > MaxModuleSize {
		return Module{}, false, fmt.Errorf("modules: %s is larger than %d bytes", file, MaxModuleSize)
	}
	if err := checkKind(data); err != nil {
		return Module{}, false, fmt.Errorf("modules: %s: %w", file, err)
	}
	m, changed := s.Set(name, data)
	return m, changed, nil
}

// Set makes data the current module of name.
func (s *Store) Set(name string, data []byte) (Module, bool) {
	sum := sha256.Sum256(data)
	m := Module{Name: name, SHA256: hex.EncodeToString(sum[:]), data: data}
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.byName[name]
	if n := len(list); n > 0 && list[n-1].SHA256 == m.SHA256 {
		return list[n-1], false
	}
	list = append(list, m)
	if len(list) > 2 {
		list = list[len(list)-2:]
	}
	s.byName[name] = list
	return m, true
}

// Current is the module of name being served, if any.
func (s *Store) Current(name string) (Module, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.byName[name]
	if len(list) == 0 {
		return Module{}, false
	}
	return list[len(list)-1], true
}

// Has reports whether the store still serves the module with this sha256.
func (s *Store) Has(sha string) bool {
	_, ok := s.bySHA(sha)
	return ok
}

func (s *Store) bySHA(sha string) (Module, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, list := range s.byName {
		for _, m := range list {
			if m.SHA256 == sha {
				return m, true
			}
		}
	}
	return Module{}, false
}

// OnFetch calls fn after every completed download.
func (s *Store) OnFetch(fn func(Fetch)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifier = fn
}

// Fetches returns the download records, oldest first.
func (s *Store) Fetches() []Fetch {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Fetch, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, *s.fetches[k])
	}
	return out
}

// FetchOf is node's record for a module.
func (s *Store) FetchOf(node, sha string) (Fetch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.fetches[node+"/"+sha]
	if !ok {
		return Fetch{}, false
	}
	return *f, true
}

func (s *Store) record(node, sha string, n int64, complete bool) {
	s.mu.Lock()
	key := node + "/" + sha
	f := s.fetches[key]
	if f == nil {
		f = &Fetch{Node: node, SHA256: sha}
		s.fetches[key] = f
	} else {
		s.order = slices.DeleteFunc(s.order, func(k string) bool { return k == key })
	}
	s.order = append(s.order, key)
	if len(s.order) > s.limits.Nodes {
		delete(s.fetches, s.order[0])
		s.order = s.order[1:]
	}
	if n < 0 {
		f.Started++
	} else {
		f.Bytes += n
	}
	if complete {
		f.Complete++
	}
	f.Last = time.Now()
	notify, snapshot := s.notifier, *f
	s.mu.Unlock()
	if complete && notify != nil {
		notify(snapshot)
	}
}

// Handler serves GET and HEAD of Path(sha). identify names the client (a
// node id from its certificate, or its address).
func (s *Store) Handler(identify func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
		sha, ok2 := strings.CutSuffix(name, ".wasm")
		shared := false
		if !ok2 {
			sha, ok2 = strings.CutSuffix(name, ".so")
			shared = true
		}
		m, found := s.bySHA(sha)
		if !ok || !ok2 || !found || shared != isSharedObject(m.data) {
			http.NotFound(w, r)
			return
		}
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
		default:
			// Envoy retries a failed download later; a fleet restarting
			// at once must not hold every module in flight at once.
			w.Header().Set("Retry-After", "2")
			http.Error(w, "too many downloads in progress", http.StatusServiceUnavailable)
			return
		}
		node := identify(r)
		w.Header().Set("Content-Type", "application/wasm")
		if shared {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		// The path names the content: it never changes.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		w.Header().Set("ETag", `"`+m.SHA256+`"`)
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", fmt.Sprint(len(m.data)))
			return
		}
		s.record(node, m.SHA256, -1, false)
		cw := &countingWriter{w: w}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(m.data))
		s.record(node, m.SHA256, cw.n, cw.n == int64(len(m.data)))
	})
}

type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Header() http.Header  { return c.w.Header() }
func (c *countingWriter) WriteHeader(code int) { c.w.WriteHeader(code) }
func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Serve runs an HTTP server for h on lis until ctx ends.
func Serve(ctx context.Context, srv *http.Server, serve func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("modules: %w", err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
		return nil
	}
}

// NewHTTPServer is the module server with its time limits: a slow client
// cannot hold a download slot for ever.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
}

// checkKind accepts a Wasm module or an ELF shared object for this
// machine's architecture, and refuses anything else before any Envoy is
// told to fetch it.
func checkKind(data []byte) error {
	if bytes.HasPrefix(data, []byte("\x00asm")) {
		return nil
	}
	if !isSharedObject(data) {
		return errors.New("neither a Wasm module nor an ELF shared object")
	}
	exports, err := elfbin.Exports(data)
	if err != nil {
		return err
	}
	// Envoy calls this first. A library without it fails its first load
	// but stays resident if it cannot be unloaded (a Go library cannot),
	// and Envoy's next load finds it resident and skips the check.
	if !slices.Contains(exports, DynamicModuleEntry) {
		return fmt.Errorf("a shared object that is not an Envoy dynamic module: it does not export %s", DynamicModuleEntry)
	}
	return nil
}

// DynamicModuleEntry is the function Envoy calls when it loads a dynamic
// module.
const DynamicModuleEntry = "envoy_dynamic_module_on_program_init"

func isSharedObject(data []byte) bool { return bytes.HasPrefix(data, []byte(elf.ELFMAG)) }

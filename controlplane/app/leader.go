package app

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
)

// jwksElection is the election whose leader fetches JWKS URLs.
const jwksElection = "jwks"

// jwksValuePrefix names the stored key set documents: jwks/<url>.
const jwksValuePrefix = "jwks/"

// sharedKeys is the jwks.Shared of a replica: the documents every replica
// reads, kept in memory from the store's watch, and whether this replica
// is the one that fetches.
type sharedKeys struct {
	a       *App
	leading atomic.Bool
	mu      sync.Mutex
	docs    map[string][]byte // by URL
}

func (s *sharedKeys) Leading() bool { return s.leading.Load() }

// Fetched returns the stored document: from memory when the watch has
// delivered it, else from the store (a replica's first load runs before
// its watch).
func (s *sharedKeys) Fetched(ctx context.Context, url string) ([]byte, bool, error) {
	s.mu.Lock()
	doc, ok := s.docs[url]
	s.mu.Unlock()
	if ok {
		return doc, true, nil
	}
	doc, ok, err := s.a.cfg.Store.Value(ctx, jwksValuePrefix+url)
	if err == nil && ok {
		s.set(url, doc)
	}
	return doc, ok, err
}

func (s *sharedKeys) StoreFetched(ctx context.Context, url string, doc []byte) error {
	if err := s.a.cfg.Store.PutValue(ctx, jwksValuePrefix+url, doc); err != nil {
		return err
	}
	s.set(url, doc)
	return nil
}

// set records a document and reports whether it changed.
func (s *sharedKeys) set(url string, doc []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.docs[url]; ok && string(old) == string(doc) {
		return false
	}
	s.docs[url] = doc
	return true
}

// runSharedKeys campaigns for the JWKS election and follows the stored
// documents until ctx ends. A document another replica stored is served
// at once (refreshKeys pushes only a changed ECDS config).
func (a *App) runSharedKeys(ctx context.Context) {
	go func() {
		_ = a.cfg.Store.Lead(ctx, jwksElection, func(lctx context.Context) {
			a.keys.leading.Store(true)
			a.log.Info("fetching JWKS URLs for every replica", "replica", a.cfg.Replica)
			a.refreshKeys(lctx)
			<-lctx.Done()
			a.keys.leading.Store(false)
		})
	}()
	_ = a.cfg.Store.WatchValues(ctx, func(name string, value []byte) {
		url, ok := strings.CutPrefix(name, jwksValuePrefix)
		if ok && a.keys.set(url, value) {
			a.refreshKeys(ctx)
		}
	})
}

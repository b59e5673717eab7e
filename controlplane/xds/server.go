// Package xds serves translated resources to Envoy over ADS, state of the
// world and delta, and records what each connected Envoy has ACKed or NACKed.
package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// snapshotGroup is the cache key of every Envoy that runs the Wasm build of
// the handshake filter: all Envoys run the same policy, and per-node state
// lives in Status, not in the cache. nativeGroup is the key of those that
// asked for the dynamic module in their node metadata (FilterMetadataKey):
// the same policy, translated for that build.
const (
	snapshotGroup = "directpipe"
	nativeGroup   = "directpipe/native"
)

// FilterMetadataKey is the node metadata field in which an Envoy names the
// build of the handshake filter it runs: "native" for the dynamic module;
// anything else, or nothing, is the Wasm module.
const FilterMetadataKey = "directpipe.filter"

// The builds of the handshake filter a node can be served.
const (
	FilterWasm   = "wasm"
	FilterNative = "native"
)

// nodeFilter is the build a node asked for.
func nodeFilter(n *corev3.Node) string {
	if n.GetMetadata().GetFields()[FilterMetadataKey].GetStringValue() == FilterNative {
		return FilterNative
	}
	return FilterWasm
}

type groupHash struct{}

func (groupHash) ID(n *corev3.Node) string {
	if nodeFilter(n) == FilterNative {
		return nativeGroup
	}
	return snapshotGroup
}

// Server is the xDS server: a snapshot cache, the ADS gRPC service over it
// and the per-node status fed by the stream callbacks.
type Server struct {
	cache  cachev3.SnapshotCache
	status *Status
	ads    serverv3.Server
	log    *slog.Logger

	setMu sync.Mutex
	// set is what the last SetResources served, by type; setNative the
	// same for the native group, when it has resources of its own.
	set, setNative map[string]typeSet
}

// typeSet is one type's resources as served, with their versions.
type typeSet struct {
	list        []types.Resource
	version     string
	perResource map[string]string
}

// NewServer returns a server with an empty cache. Envoys that connect before
// the first SetResources wait until it is called.
func NewServer(ctx context.Context, log *slog.Logger, metrics *Metrics) *Server {
	s := &Server{
		cache:  cachev3.NewSnapshotCache(true, groupHash{}, cacheLogger{log}),
		status: newStatus(log, metrics),
		log:    log,
	}
	s.ads = serverv3.NewServer(ctx, newNACKBackoff(s.cache, s.snapshotVersion), s.status.callbacks())
	s.status.HoldingFrom(s.holding)
	return s
}

// holding is the latest version of a type if the resources a
// reconnecting delta node says it holds (held, name → version) are what
// its snapshot serves it of that type: each at its current version, and
// every one it subscribes to (all, for a wildcard subscription) among
// them. "" otherwise.
func (s *Server) holding(node *corev3.Node, typeURL string, subscribed []string, held map[string]string) string {
	s.setMu.Lock()
	set := s.set
	if (groupHash{}).ID(node) == nativeGroup && s.setNative != nil {
		set = s.setNative
	}
	ts, ok := set[typeURL]
	s.setMu.Unlock()
	if !ok {
		return ""
	}
	for name, v := range held {
		if ts.perResource[name] != v {
			return ""
		}
	}
	wildcard := len(subscribed) == 0 || slices.Contains(subscribed, "*")
	for name := range ts.perResource {
		if _, ok := held[name]; !ok && (wildcard || slices.Contains(subscribed, name)) {
			return ""
		}
	}
	return s.status.Latest()[typeURL]
}

// snapshotVersion is the served version of a type, "" before the first
// snapshot.
func (s *Server) snapshotVersion(typeURL string) string {
	snap, err := s.cache.GetSnapshot(snapshotGroup)
	if err != nil {
		return ""
	}
	return snap.GetVersion(typeURL)
}

// Register adds the ADS service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// Status is the per-node record of what was sent, ACKed and NACKed.
func (s *Server) Status() *Status { return s.status }

// SetResources validates a translated set and, only if it is consistent,
// makes it the snapshot every Envoy is served. On error nothing changes: the
// last good snapshot keeps serving. It returns the version of each type.
func (s *Server) SetResources(ctx context.Context, res xdstype.Resources) (map[string]string, error) {
	return s.SetVariants(ctx, res, nil)
}

// SetVariants is SetResources with the resources of the nodes that run the
// dynamic module (native; nil: they are served res too). Both sets carry
// one version per type, a hash over both, so that a node's sync state, an
// apply's wait for ACKs and a rollout read the same way whichever build a
// node runs, and a change to either set is a new version for every node.
func (s *Server) SetVariants(ctx context.Context, res, native xdstype.Resources) (map[string]string, error) {
	kinds := xdstype.Kinds()
	for _, set := range []xdstype.Resources{res, native} {
		for typeURL := range set {
			if !slices.ContainsFunc(kinds, func(k xdstype.Kind) bool { return k.URL == typeURL }) {
				return nil, fmt.Errorf("xds: %s is not a type directpipe serves", typeURL)
			}
		}
	}
	s.setMu.Lock()
	defer s.setMu.Unlock()
	next, nextNative := map[string]typeSet{}, map[string]typeSet{}
	versions := map[string]string{}
	for _, k := range kinds {
		ts, err := typeSetOf(s.set, k.URL, res[k.URL])
		if err != nil {
			return nil, err
		}
		next[k.URL] = ts
		versions[k.URL] = ts.version
		if native == nil {
			continue
		}
		nts, err := typeSetOf(s.setNative, k.URL, native[k.URL])
		if err != nil {
			return nil, fmt.Errorf("%w (native variant)", err)
		}
		nextNative[k.URL] = nts
		sum := sha256.Sum256([]byte(ts.version + "/" + nts.version))
		versions[k.URL] = hex.EncodeToString(sum[:])[:16]
	}
	snap, err := snapshotOf(next, versions)
	if err != nil {
		return nil, err
	}
	nativeSnap := snap
	if native != nil {
		if nativeSnap, err = snapshotOf(nextNative, versions); err != nil {
			return nil, fmt.Errorf("%w (native variant)", err)
		}
	}
	// The native group first: an Envoy of either build that sees the new
	// version has its own set already.
	if err := s.cache.SetSnapshot(ctx, nativeGroup, nativeSnap); err != nil {
		return nil, fmt.Errorf("xds: set snapshot: %w", err)
	}
	if err := s.cache.SetSnapshot(ctx, snapshotGroup, snap); err != nil {
		return nil, fmt.Errorf("xds: set snapshot: %w", err)
	}
	previous := s.status.Latest()
	changed := []string{}
	for _, k := range kinds {
		if previous[k.URL] != versions[k.URL] {
			changed = append(changed, k.Name())
		}
	}
	s.set = next
	s.setNative = nil
	if native != nil {
		s.setNative = nextNative
	}
	s.status.setLatest(versions)
	s.log.Info("snapshot set", "changed", changed, "versions", shortVersions(versions), "native_variant", native != nil)
	return versions, nil
}

// snapshotOf is a consistent snapshot of sets at versions.
func snapshotOf(sets map[string]typeSet, versions map[string]string) (*cachev3.Snapshot, error) {
	snap := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	// Delta xDS compares per-resource versions. They are hashed here from
	// the bytes the type's version is hashed from, as go-control-plane's
	// ConstructVersionMap would (sha256 of the deterministic encoding),
	// which saves marshalling every resource a second time per push.
	for typeURL, ts := range sets {
		snap.Resources[cachev3.GetResponseType(typeURL)] = cachev3.NewResources(versions[typeURL], ts.list)
		snap.VersionMap[typeURL] = ts.perResource
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xds: snapshot is not consistent: %w", err)
	}
	return snap, nil
}

// typeSet validates and hashes one type's list, or reuses what the last
// snapshot computed when the list holds the very same resources (a bridge
// changes one filter config and keeps every other resource of the served
// snapshot: at 10,000 routes, validating and hashing the routes again costs
// ~50 ms). Served resources are never modified: go-control-plane marshals
// them lazily, per response, and relies on that too.
func typeSetOf(served map[string]typeSet, typeURL string, list []types.Resource) (typeSet, error) {
	if last, ok := served[typeURL]; ok && slices.Equal(last.list, list) {
		return last, nil
	}
	// Validation and hashing read the same resources and are independent:
	// they run at once (at 10,000 routes each takes tens of milliseconds).
	valid := make(chan error, 1)
	go func() {
		for _, r := range list {
			if v, ok := r.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					valid <- fmt.Errorf("xds: invalid %s resource: %w", typeURL, err)
					return
				}
			}
		}
		valid <- nil
	}()
	version, perResource, hashErr := contentVersion(list)
	if err := <-valid; err != nil {
		return typeSet{}, err
	}
	if hashErr != nil {
		return typeSet{}, hashErr
	}
	return typeSet{list: slices.Clone(list), version: version, perResource: perResource}, nil
}

// Versions returns the version of each type in the current snapshot.
func (s *Server) Versions() map[string]string { return s.status.Latest() }

// contentVersion hashes the resources of one type in their (deterministic)
// order, so the same policy always yields the same version and a restarted
// control plane re-sends what Envoy already has under the same name. It
// also returns each resource's own version, by name, for delta xDS.
func contentVersion(list []types.Resource) (string, map[string]string, error) {
	h := sha256.New()
	perResource := make(map[string]string, len(list))
	for _, r := range list {
		b, err := cachev3.MarshalResource(r)
		if err != nil {
			return "", nil, fmt.Errorf("xds: hash resource: %w", err)
		}
		perResource[cachev3.GetResourceName(r)] = cachev3.HashResource(b)
		// Length-prefix each resource so that two lists cannot collide by
		// moving bytes across a boundary.
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], perResource, nil
}

func shortVersions(v map[string]string) map[string]string {
	out := map[string]string{}
	for k, ver := range v {
		out[xdstype.Name(k)] = ver
	}
	return out
}

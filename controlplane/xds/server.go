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

// snapshotGroup is the one cache key every Envoy maps to: all Envoys run the
// same policy, and per-node state lives in Status, not in the cache.
const snapshotGroup = "directpipe"

type groupHash struct{}

func (groupHash) ID(*corev3.Node) string { return snapshotGroup }

// Server is the xDS server: a snapshot cache, the ADS gRPC service over it
// and the per-node status fed by the stream callbacks.
type Server struct {
	cache  cachev3.SnapshotCache
	status *Status
	ads    serverv3.Server
	log    *slog.Logger

	setMu sync.Mutex
	// set is what the last SetResources served, by type.
	set map[string]typeSet
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
	return s
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
	kinds := xdstype.Kinds()
	for typeURL := range res {
		if !slices.ContainsFunc(kinds, func(k xdstype.Kind) bool { return k.URL == typeURL }) {
			return nil, fmt.Errorf("xds: %s is not a type directpipe serves", typeURL)
		}
	}
	// Delta xDS compares per-resource versions. They are hashed here from
	// the bytes the type's version is hashed from, as go-control-plane's
	// ConstructVersionMap would (sha256 of the deterministic encoding),
	// which saves marshalling every resource a second time per push.
	snap := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	versions := map[string]string{}
	s.setMu.Lock()
	defer s.setMu.Unlock()
	next := map[string]typeSet{}
	for _, k := range kinds {
		typeURL, list := k.URL, res[k.URL]
		ts, err := s.typeSet(typeURL, list)
		if err != nil {
			return nil, err
		}
		next[typeURL] = ts
		versions[typeURL] = ts.version
		snap.Resources[cachev3.GetResponseType(typeURL)] = cachev3.NewResources(ts.version, list)
		snap.VersionMap[typeURL] = ts.perResource
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xds: snapshot is not consistent: %w", err)
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
	s.status.setLatest(versions)
	s.log.Info("snapshot set", "changed", changed, "versions", shortVersions(versions))
	return versions, nil
}

// typeSet validates and hashes one type's list, or reuses what the last
// snapshot computed when the list holds the very same resources (a bridge
// changes one filter config and keeps every other resource of the served
// snapshot: at 10,000 routes, validating and hashing the routes again costs
// ~50 ms). Served resources are never modified: go-control-plane marshals
// them lazily, per response, and relies on that too.
func (s *Server) typeSet(typeURL string, list []types.Resource) (typeSet, error) {
	if last, ok := s.set[typeURL]; ok && slices.Equal(last.list, list) {
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

package translate

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ModuleCluster is the bootstrap cluster through which Envoy fetches
// modules from the control plane (envoy/bootstrap declares it).
const ModuleCluster = "directpipe_modules"

// moduleFetchTimeout bounds one download of a module.
const moduleFetchTimeout = 60 * time.Second

// ModuleSource says where Envoy gets a Wasm module's code: this is the one
// place that decides it. Either File, a path on Envoy's own disk, or URL
// and SHA256: Envoy downloads the module through ModuleCluster, checks its
// sha256, and keeps it in a cache keyed by that hash, so a config change
// that keeps the module never downloads it again.
type ModuleSource struct {
	File   string
	URL    string
	SHA256 string
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (m ModuleSource) check() error {
	switch {
	case m.File != "" && m.URL != "":
		return errors.New("a module comes from a file or a URL, not both")
	case m.File == "" && m.URL == "":
		return errors.New("no module file or URL")
	case m.URL != "" && !sha256Hex.MatchString(m.SHA256):
		return fmt.Errorf("module URL %s needs its sha256 as 64 lower-case hex digits", m.URL)
	}
	return nil
}

// code is the module's data source in a VmConfig.
func (m ModuleSource) code() *corev3.AsyncDataSource {
	if m.URL == "" {
		return &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{Local: &corev3.DataSource{
			Specifier: &corev3.DataSource_Filename{Filename: m.File},
		}}}
	}
	return &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{
		HttpUri: &corev3.HttpUri{
			Uri:              m.URL,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: ModuleCluster},
			Timeout:          durationpb.New(moduleFetchTimeout),
		},
		Sha256: m.SHA256,
	}}}
}

// remote reports whether Envoy downloads the module.
func (m ModuleSource) remote() bool { return m.URL != "" }

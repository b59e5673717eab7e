// Package buildinfo reports how the running binary was built, from what
// the Go toolchain records in it: `dpctl version` shows it for the client
// and, through the admin API, for the control plane.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// commit is set by the Makefile's -ldflags -X for builds that record no
// VCS information (GOFLAGS=-buildvcs=false, a source tarball).
var commit string

// Info is a binary's build.
type Info struct {
	// Version is the main module's version, "(devel)" for a build from a
	// work tree.
	Version string
	// Commit is the VCS revision, with "-dirty" for uncommitted changes;
	// empty when the build recorded none.
	Commit    string
	GoVersion string
}

// Read returns the running binary's build.
func Read() Info {
	info := Info{Version: "(unknown)", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		info.Commit = commit
		return info
	}
	info.Version = bi.Main.Version
	if info.Version == "" {
		info.Version = "(devel)"
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if info.Commit == "" {
		info.Commit = commit
	}
	if len(info.Commit) > 12 {
		info.Commit = info.Commit[:12]
	}
	if info.Commit != "" && modified {
		info.Commit += "-dirty"
	}
	return info
}

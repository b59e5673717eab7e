//go:build linux

package latencylab

import (
	"fmt"
	"slices"
	"strings"
)

// Sections are the parts of a run, in the order Run measures them.
var Sections = []string{"paths", "capacity", "profile", "storm", "tunings", "handshakes", "control", "push", "fleet"}

// Selection narrows a run to some sections, paths and tunings, so that one
// question (a profile of two paths, one setting against its baseline) can
// be measured in minutes. Empty lists select everything.
type Selection struct {
	Sections []string `json:"sections,omitempty"`
	Paths    []string `json:"paths,omitempty"`
	Tunings  []string `json:"tunings,omitempty"`
}

// ParseSelection reads comma-separated lists and refuses unknown names.
func ParseSelection(sections, paths, tuningNames string) (Selection, error) {
	var s Selection
	var err error
	if s.Sections, err = parseList("section", sections, Sections); err != nil {
		return Selection{}, err
	}
	if s.Paths, err = parseList("path", paths, PathNames()); err != nil {
		return Selection{}, err
	}
	if s.Tunings, err = parseList("tuning", tuningNames, TuningNames()); err != nil {
		return Selection{}, err
	}
	return s, nil
}

func parseList(kind, list string, known []string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown %s %q (known: %s)", kind, name, strings.Join(known, ", "))
		}
		out = append(out, name)
	}
	return out, nil
}

// PathNames are every path the lab can measure.
func PathNames() []string {
	names := []string{"no-proxy", "direct", "tcp", "tcp-auth", "full-chain", "rest-per-frame", "direct-native", "tcp-auth-native", "no-filter"}
	for _, p := range peers {
		names = append(names, p.name)
	}
	return names
}

// TuningNames are the Envoy settings the lab can try.
func TuningNames() []string {
	var names []string
	for _, tu := range tunings {
		names = append(names, tu.name)
	}
	return names
}

func selected(list []string, name string) bool { return len(list) == 0 || slices.Contains(list, name) }

func (s Selection) section(name string) bool { return selected(s.Sections, name) }
func (s Selection) path(name string) bool    { return selected(s.Paths, name) }

// tuning keeps the baseline always: every other setting is measured
// against it.
func (s Selection) tuning(name string) bool { return name == "baseline" || selected(s.Tunings, name) }

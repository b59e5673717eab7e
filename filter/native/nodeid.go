package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Envoy 1.40 gives a dynamic module no call for its node id (the xds.node
// attribute is not offered as a string), and the filter config is the
// same for every node. The module runs in Envoy's process, though, so it
// reads the id where Envoy did: the --service-node flag, which overrides
// the bootstrap, else node.id of --config-yaml, else of the bootstrap
// file (-c, --config-path). Read once per process.
var processNodeID = sync.OnceValues(func() (string, error) {
	cmdline, err := readBounded("/proc/self/cmdline", maxCmdline)
	if err != nil {
		return "", fmt.Errorf("reading Envoy's command line: %w", err)
	}
	return nodeIDFromArgs(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), func(path string) ([]byte, error) {
		return readBounded(path, maxBootstrap)
	})
})

// Bounds on what the module reads to find its node id.
const (
	maxCmdline   = 64 << 10
	maxBootstrap = 4 << 20
)

var errNoNodeID = errors.New("Envoy's command line and bootstrap name no node id")

// nodeIDFromArgs finds the node id in Envoy's arguments (args[0] is the
// program); readFile reads the bootstrap file.
func nodeIDFromArgs(args []string, readFile func(string) ([]byte, error)) (string, error) {
	var path, inline string
	for i := 1; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		switch name {
		case "--service-node":
			if value != "" {
				return value, nil
			}
		case "-c", "--config-path":
			path = value
		case "--config-yaml":
			inline = value
		default:
			continue
		}
		if !hasValue {
			i++
		}
	}
	if id, err := bootstrapNodeID([]byte(inline)); err == nil && id != "" {
		return id, nil
	}
	if path == "" {
		return "", errNoNodeID
	}
	b, err := readFile(path)
	if err != nil {
		return "", fmt.Errorf("reading Envoy's bootstrap: %w", err)
	}
	id, err := bootstrapNodeID(b)
	if err != nil {
		return "", fmt.Errorf("reading Envoy's bootstrap %s: %w", path, err)
	}
	if id == "" {
		return "", errNoNodeID
	}
	return id, nil
}

// bootstrapNodeID reads node.id of a bootstrap: JSON, or YAML in the
// forms Envoy's docs and envoy-bootstrap write (a block "node:" at the
// top level whose "id:" is plain or quoted, or a flow "node: {id: ...}").
// It does not carry a YAML parser, which would add most of a megabyte to
// the library for one string: a form it does not read is an error, and
// the module then applies the rest share, which is safe. "" when the
// bootstrap names no node id.
func bootstrapNodeID(b []byte) (string, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		var doc struct {
			Node struct {
				ID string `json:"id"`
			} `json:"node"`
		}
		if err := json.Unmarshal(t, &doc); err != nil {
			return "", err
		}
		return doc.Node.ID, nil
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		l = strings.TrimRight(l, " \t\r")
		rest, ok := strings.CutPrefix(l, "node:")
		if !ok {
			continue
		}
		if rest = strings.TrimSpace(rest); rest != "" {
			return flowNodeID(rest)
		}
		indent := -1
		for _, c := range lines[i+1:] {
			c = strings.TrimRight(c, " \t\r")
			body := strings.TrimLeft(c, " ")
			if body == "" || body[0] == '#' {
				continue
			}
			n := len(c) - len(body)
			if n == 0 {
				break // the next top-level key
			}
			if indent < 0 {
				indent = n
			}
			if n != indent {
				continue // nested deeper
			}
			if v, ok := strings.CutPrefix(body, "id:"); ok {
				return yamlScalar(v)
			}
		}
		return "", nil
	}
	return "", nil
}

// flowNodeID reads id out of a flow mapping, {id: x, cluster: y}.
func flowNodeID(s string) (string, error) {
	inner, ok := strings.CutPrefix(s, "{")
	if !ok {
		return "", errors.New("node is neither a block nor a flow mapping")
	}
	inner, ok = strings.CutSuffix(inner, "}")
	if !ok || strings.ContainsAny(inner, "{}[]") {
		return "", errors.New("node's flow mapping is not one line of scalars")
	}
	for _, kv := range strings.Split(inner, ",") {
		k, v, _ := strings.Cut(kv, ":")
		if strings.TrimSpace(k) == "id" {
			return yamlScalar(v)
		}
	}
	return "", nil
}

// yamlScalar reads a plain, single- or double-quoted scalar.
func yamlScalar(v string) (string, error) {
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(v, `"`):
		end := strings.LastIndexByte(v, '"')
		if end <= 0 {
			return "", errors.New("an unterminated quoted node id")
		}
		return strconv.Unquote(v[:end+1])
	case strings.HasPrefix(v, "'"):
		end := strings.LastIndexByte(v, '\'')
		if end <= 0 {
			return "", errors.New("an unterminated quoted node id")
		}
		return strings.ReplaceAll(v[1:end], "''", "'"), nil
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	if v == "" || strings.ContainsAny(v, "{}[]&*!|>%@`") {
		return "", errors.New("a node id that is not a plain scalar")
	}
	return v, nil
}

// readBounded reads at most max bytes of a file; a longer one is an error.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is longer than %d bytes", path, max)
	}
	return b, nil
}

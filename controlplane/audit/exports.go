package audit

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/directpipe/directpipe/filter/elfbin"
	"github.com/directpipe/directpipe/filter/wasmbin"
)

// moduleExports is what reading one module gave: its exported names, or
// why they could not be read.
type moduleExports struct {
	names map[string]bool
	err   error
}

// wasmExports reads the export section of a filter's Wasm module.
func (a *auditor) wasmExports(code *corev3.AsyncDataSource) (map[string]bool, string, error) {
	return a.moduleExports(code, "wasm", func(b []byte) ([]string, error) {
		m, err := wasmbin.Parse(b)
		if err != nil {
			return nil, err
		}
		return m.Exports, nil
	})
}

// sharedObjectExports reads the functions a dynamic module exports.
func (a *auditor) sharedObjectExports(code *corev3.AsyncDataSource) (map[string]bool, string, error) {
	return a.moduleExports(code, "elf", elfbin.Exports)
}

// moduleExports reads a filter's module, inline or from its file through
// Input.ReadFile, and its exported names with parse. Remote modules are
// not fetched.
func (a *auditor) moduleExports(code *corev3.AsyncDataSource, kind string, parse func([]byte) ([]string, error)) (map[string]bool, string, error) {
	local := code.GetLocal()
	var where string
	switch {
	case local.GetFilename() != "":
		where = local.GetFilename()
	case local.GetInlineBytes() != nil:
		where = "inline bytes"
	case code.GetRemote() != nil:
		return nil, code.GetRemote().GetHttpUri().GetUri(), errors.New("remote modules are not fetched")
	default:
		return nil, "no source", errors.New("no module source")
	}
	if a.exports == nil {
		a.exports = map[string]moduleExports{}
	}
	key := kind + "\x00" + where
	if c, ok := a.exports[key]; ok && where != "inline bytes" {
		return c.names, where, c.err
	}
	b := local.GetInlineBytes()
	if local.GetFilename() != "" {
		if a.in.ReadFile == nil {
			return nil, where, errors.New("reading modules is off")
		}
		var err error
		if b, err = a.in.ReadFile(where); err != nil {
			a.exports[key] = moduleExports{err: err}
			return nil, where, err
		}
	}
	list, err := parse(b)
	if err != nil {
		err = fmt.Errorf("parse: %w", err)
		a.exports[key] = moduleExports{err: err}
		return nil, where, err
	}
	names := map[string]bool{}
	for _, e := range list {
		names[e] = true
	}
	a.exports[key] = moduleExports{names: names}
	return names, where, nil
}

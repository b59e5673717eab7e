package audit

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/directpipe/directpipe/filter/wasmbin"
)

type wasmExports struct {
	names map[string]bool
	err   error
}

// wasmExports reads the export section of a filter's module: inline, or
// from its file through Input.ReadFile. Remote modules are not fetched.
func (a *auditor) wasmExports(code *corev3.AsyncDataSource) (map[string]bool, string, error) {
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
	if a.wasm == nil {
		a.wasm = map[string]wasmExports{}
	}
	if c, ok := a.wasm[where]; ok && where != "inline bytes" {
		return c.names, where, c.err
	}
	b := local.GetInlineBytes()
	if local.GetFilename() != "" {
		if a.in.ReadFile == nil {
			return nil, where, errors.New("reading modules is off")
		}
		var err error
		if b, err = a.in.ReadFile(where); err != nil {
			a.wasm[where] = wasmExports{err: err}
			return nil, where, err
		}
	}
	m, err := wasmbin.Parse(b)
	if err != nil {
		err = fmt.Errorf("parse: %w", err)
		a.wasm[where] = wasmExports{err: err}
		return nil, where, err
	}
	names := map[string]bool{}
	for _, e := range m.Exports {
		names[e] = true
	}
	a.wasm[where] = wasmExports{names: names}
	return names, where, nil
}

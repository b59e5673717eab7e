//go:build wasip1

// Command framefilter is the bench's stand-in for a generic gateway's
// per-message plugin: a Proxy-Wasm filter that reads every body chunk in
// both directions — every WebSocket frame, once the stream is upgraded —
// and computes a checksum of it. It exists to be measured against the
// direct path, never to be deployed.
package main

import (
	"hash/crc32"

	"github.com/directpipe/directpipe/filter/proxywasm"
)

func main() {}

// Body buffers as the spec numbers them.
const (
	bufferRequestBody  proxywasm.BufferType = 0
	bufferResponseBody proxywasm.BufferType = 1
)

// checksum is the ABI glue's only state: it keeps the work from being
// optimised away.
var checksum uint32

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, bodySize, endOfStream uint32) uint32 {
	return inspect(bufferRequestBody)
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, bodySize, endOfStream uint32) uint32 {
	return inspect(bufferResponseBody)
}

func inspect(bt proxywasm.BufferType) uint32 {
	if b, err := proxywasm.GetBufferBytes(bt); err == nil {
		checksum = crc32.Update(checksum, crc32.IEEETable, b)
	}
	return uint32(proxywasm.ActionContinue)
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {}

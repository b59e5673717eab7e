//go:build wasip1

// Command handshake is the directpipe handshake filter, a Proxy-Wasm (ABI
// 0.2.1) module built by the standard Go toolchain as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bin/handshake.wasm ./filter/handshake
//
// It checks the caller once, on the request headers of the handshake, and
// exports no body, data or trailer callback: after the headers, Envoy never
// enters the VM for this stream again, whatever the stream carries. The
// decisions are package gate's; this file only binds them to the ABI.
package main

import (
	"time"

	"github.com/directpipe/directpipe/filter/abihost"
	"github.com/directpipe/directpipe/filter/gate"
	"github.com/directpipe/directpipe/filter/proxywasm"
)

// main is not called: with -buildmode=c-shared the host runs _initialize,
// which initialises the runtime and the packages, then calls the exports.
func main() {}

// The gate's state is the Wasm ABI glue's: the host drives the module by
// context ids, and each VM is single-threaded.
var http = gate.NewHTTP()

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	proxywasm.ReleasePending()
	if !http.Configure(abihost.Host{}, rootID) {
		return 0
	}
	return 1
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	http.ContextCreate(contextID, parentID)
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	proxywasm.ReleasePending()
	return uint32(http.RequestHeaders(abihost.Host{}, contextID, time.Now()))
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) { http.Delete(contextID) }

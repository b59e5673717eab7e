//go:build wasip1

// Command handshake-tcp is the directpipe handshake module for tcp mode
// routes: a Proxy-Wasm (ABI 0.2.1) network filter in front of tcp_proxy,
// built from the same auth core as the HTTP module:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bin/handshake-tcp.wasm ./filter/handshake-tcp
//
// The decisions are package gate's (TCP); this file only binds them to the
// ABI. The module exports no upstream data callback, so it never sees the
// server's side of the stream.
package main

import (
	"time"

	"github.com/directpipe/directpipe/filter/abihost"
	"github.com/directpipe/directpipe/filter/gate"
	"github.com/directpipe/directpipe/filter/proxywasm"
)

func main() {}

// The gate's state is the Wasm ABI glue's, as in the HTTP module: the host
// drives the module by context ids, on one thread per VM.
var tcp = gate.NewTCP()

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	proxywasm.ReleasePending()
	if !tcp.Configure(abihost.Host{}, rootID) {
		return 0
	}
	return 1
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	tcp.ContextCreate(contextID, parentID, time.Now())
}

//go:wasmexport proxy_on_new_connection
func proxyOnNewConnection(contextID uint32) uint32 {
	return uint32(tcp.NewConnection(contextID))
}

//go:wasmexport proxy_on_downstream_data
func proxyOnDownstreamData(contextID, dataSize, endOfStream uint32) uint32 {
	proxywasm.ReleasePending()
	return uint32(tcp.DownstreamData(abihost.Host{}, contextID, dataSize, endOfStream != 0, time.Now()))
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	tcp.Tick(abihost.Host{}, rootID, time.Now())
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) { tcp.Delete(contextID) }

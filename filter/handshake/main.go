//go:build wasip1

// Command handshake is the directpipe handshake module, a Proxy-Wasm (ABI
// 0.2.1) module built by the standard Go toolchain as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bin/handshake.wasm ./filter/handshake
//
// One module serves both filters: the HTTP filter of the upgrade chain,
// which checks the caller once, on the request headers, and the network
// filter in front of tcp_proxy on tcp mode routes, which reads the upgrade
// request from a connection's first bytes. Envoy shares one compiled
// module and one instance per worker between them because their VM
// configuration and code are the same.
//
// It exports no body, trailer, response or upstream callback, and Envoy's
// HTTP filter never calls the network ones: after the headers, Envoy never
// enters the VM for an HTTP stream again, whatever the stream carries.
// The decisions are package gate's; this file only binds them to the ABI.
package main

import (
	"os"
	"runtime/debug"
	"time"

	"github.com/directpipe/directpipe/filter/abihost"
	"github.com/directpipe/directpipe/filter/gate"
	"github.com/directpipe/directpipe/filter/proxywasm"
)

// main is not called: with -buildmode=c-shared the host runs _initialize,
// which initialises the runtime and the packages, then calls the exports.
func main() {}

// memoryLimit bounds the Go heap (a soft limit: the collector works harder
// near it). Each worker's instance has its own linear memory, which Wasm
// never shrinks, so the heap's high-water mark is what a worker holds for
// ever; the live heap is small (configurations, the token cache), and a
// burst (a 4 MiB configuration decoded) must not leave a worker holding
// far more. GOMEMLIMIT in the VM's environment takes precedence. The
// collector's pace is Go's default: GOGC=25 cost cold handshakes time
// (more collections) and saved no measurable memory per worker.
const memoryLimit = 16 << 20

func init() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

// The module's state is the Wasm ABI glue's: the host drives the module by
// context ids, and each VM is single-threaded.
var module = gate.NewModule()

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	proxywasm.ReleasePending()
	return boolean(module.Configure(abihost.Host{}, rootID))
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	module.ContextCreate(contextID, parentID, time.Now())
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	proxywasm.ReleasePending()
	return uint32(module.RequestHeaders(abihost.Host{}, contextID, time.Now()))
}

//go:wasmexport proxy_on_new_connection
func proxyOnNewConnection(contextID uint32) uint32 {
	return uint32(module.NewConnection(abihost.Host{}, contextID))
}

//go:wasmexport proxy_on_downstream_data
func proxyOnDownstreamData(contextID, dataSize, endOfStream uint32) uint32 {
	proxywasm.ReleasePending()
	return uint32(module.DownstreamData(abihost.Host{}, contextID, dataSize, endOfStream != 0, time.Now))
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	module.Tick(abihost.Host{}, rootID, time.Now())
}

// No proxy_on_done: Envoy calls it, then proxy_on_delete, at every
// stream's and connection's end, and treats a missing export as "done".
// Leaving it out makes a stream's end one call into the VM, where the
// quota gives the stream back.

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) { module.Delete(abihost.Host{}, contextID) }

func boolean(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

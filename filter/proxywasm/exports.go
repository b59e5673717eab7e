//go:build wasip1

package proxywasm

import "unsafe"

// The callbacks every module answers the same way live here, beside the
// memory hand-off they belong to; each module exports its own context
// callbacks.

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion() {}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) unsafe.Pointer { return Allocate(size) }

// proxyOnVMStart accepts every VM: the modules take no VM configuration.
//
//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, vmConfigSize uint32) uint32 { return 1 }

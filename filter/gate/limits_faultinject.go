//go:build faultinject

package gate

// A module built with -tags faultinject has the bounds it had before they
// existed: a tick closes every late handshake at once, so a flood of
// silent connections overflows the VM's stack and fails it. The fault
// suite uses it to prove that a failed VM heals and shows; no product
// build carries it.
//
// Its tick is 5 s, so that a flood dialled over a few seconds on a busy
// machine still times out within one tick, and one callback closes it all.
const (
	ClosesPerCall = 1 << 20
	MaxPending    = 1 << 20
	TickMillis    = 5000
)

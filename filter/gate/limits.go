//go:build !faultinject

package gate

const (
	// ClosesPerCall bounds the connections one callback closes. Closing
	// a connection re-enters the module before the host call returns
	// (proxy_on_delete), and V8 keeps part of each nested
	// entry's native stack until the outer callback returns: a tick that
	// closed a thousand idle connections overflowed the stack and failed
	// the worker's VM, and with it every plugin sharing that VM.
	ClosesPerCall = 32
	// MaxPending bounds the undecided handshakes a worker holds. Past it
	// a new connection sheds the oldest one: a caller with a real
	// handshake sends it at once, so under a flood of silent sockets the
	// ones that go are the flood's.
	MaxPending = 1024
	// TickMillis is how often the host ticks a tcp plugin. With
	// ClosesPerCall it sets how fast late handshakes are closed: 160 a
	// second per worker, more than MaxPending handshakes can time out in
	// a head timeout.
	TickMillis = 200
)

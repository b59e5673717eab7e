package main

// #include "dp_abi.h"
import "C"

import (
	"errors"
	"net"
	"runtime"
	"strconv"
	"unsafe"

	"github.com/directpipe/directpipe/filter/gate"
)

// netHost binds gate.TCPHost to the network filter's ABI for one worker's
// tcp gate: filter is the connection whose callback is running, or the one
// SetEffectiveContext chose.
type netHost struct {
	cfg    *netConfig
	w      *netWorker
	filter C.uintptr_t
}

var (
	_ gate.TCPHost      = (*netHost)(nil)
	_ gate.TCPResponder = (*netHost)(nil)
)

var errNoConnection = errors.New("no connection: called outside of a connection's callback")

func (h *netHost) Log(level gate.Level, msg string) { log(logLevels[level], msg) }

func (h *netHost) PluginConfiguration() ([]byte, error) { return h.cfg.raw, nil }

// DefineCounter defines a counter while Envoy creates the configuration.
func (h *netHost) DefineCounter(name string) {
	c := h.cfg
	if c.envoy == 0 {
		return
	}
	if _, ok := c.counters[name]; ok {
		return
	}
	var id C.size_t
	if C.dp_net_define_counter(c.envoy, buffer(name), &id) == 0 {
		c.counters[name] = id
	}
}

func (h *netHost) Count(name string) {
	id, ok := h.cfg.counters[name]
	if !ok || h.filter == 0 {
		return
	}
	C.dp_net_increment_counter(h.filter, id, 1)
}

// AddGauge keeps the gauge's value for the HTTP filter to set in Envoy:
// Envoy 1.40's network filter defines no labelled stats (see stats.go).
func (h *netHost) AddGauge(name string, delta int64) { gauges.add(name, delta, nil) }

// NodeID: as the HTTP filter's host (see host.go).

func (h *netHost) NodeID() (string, error) { return processNodeID() }

func (h *netHost) VerifySignature(hash string, spki, sig, signed []byte) (bool, error) {
	return false, errNoHostCrypto
}

// ClientAddress is the connection's remote address, as Proxy-Wasm's
// source.address gives it to the Wasm network filter.
func (h *netHost) ClientAddress() (string, error) {
	if h.filter == 0 {
		return "", errNoConnection
	}
	var addr C.dp_buffer
	var port C.uint32_t
	if !C.dp_net_remote_address(h.filter, &addr, &port) || addr.length == 0 {
		return "", errors.New("the connection has no IP remote address")
	}
	return net.JoinHostPort(C.GoStringN(addr.ptr, C.int(addr.length)), strconv.Itoa(int(port))), nil
}

func (h *netHost) SharedData(key string) ([]byte, uint32, error) { return shared.get(key) }

func (h *netHost) SetSharedData(key string, value []byte, cas uint32) (bool, error) {
	return shared.set(key, value, cas), nil
}

// SetTickPeriod has nothing to ask Envoy: see on_network_filter_new_connection.
func (h *netHost) SetTickPeriod(ms uint32) error { return nil }

// DownstreamData copies bytes start to start+max of what the client has
// sent out of Envoy's read buffer, which is lent for the callback.
func (h *netHost) DownstreamData(start, max uint32) ([]byte, error) {
	if h.filter == 0 {
		return nil, errNoConnection
	}
	n := int(C.dp_net_read_chunks_size(h.filter))
	if n == 0 {
		return nil, nil
	}
	chunks := make([]C.dp_buffer, n)
	if !C.dp_net_read_chunks(h.filter, &chunks[0]) {
		return nil, errors.New("reading the connection's data failed")
	}
	lent := make([][]byte, n)
	for i, ch := range chunks {
		lent[i] = unsafe.Slice((*byte)(unsafe.Pointer(ch.ptr)), int(ch.length))
	}
	return copyRange(lent, int(start), int(max)), nil
}

// copyRange copies at most max bytes from byte start on of the buffer
// whose slices are chunks.
func copyRange(chunks [][]byte, start, max int) []byte {
	out := make([]byte, 0, max)
	for _, b := range chunks {
		if start >= len(b) {
			start -= len(b)
			continue
		}
		b = b[start:]
		start = 0
		if room := max - len(out); len(b) > room {
			b = b[:room]
		}
		out = append(out, b...)
		if len(out) == max {
			break
		}
	}
	return out
}

// ReplaceDownstreamData replaces the first size bytes of the read buffer.
func (h *netHost) ReplaceDownstreamData(size uint32, data []byte) error {
	if h.filter == 0 {
		return errNoConnection
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	if len(data) > 0 {
		pin.Pin(&data[0])
	}
	if !C.dp_net_drain(h.filter, C.size_t(size)) || !C.dp_net_prepend(h.filter, bytesBuffer(data)) {
		return errors.New("rewriting the connection's data failed")
	}
	return nil
}

// SetConnectionFilterState is the Wasm filter's way to a denial; this one
// answers the client itself (Respond).
func (h *netHost) SetConnectionFilterState(key, value string) error {
	return errors.New("the native network filter answers denials itself")
}

func (h *netHost) CloseDownstream() error {
	if h.filter == 0 {
		return errNoConnection
	}
	if !C.dp_net_close(h.filter, C.dp_close_no_flush) {
		return errors.New("closing the connection failed")
	}
	return nil
}

// SetEffectiveContext makes later calls act on another connection of the
// worker; the root (the plugin) has no connection.
func (h *netHost) SetEffectiveContext(id uint32) error {
	if id == rootID {
		h.filter = 0
		return nil
	}
	nc, ok := h.w.conns[id]
	if !ok {
		return errors.New("connection " + strconv.Itoa(int(id)) + " is gone")
	}
	h.filter = nc.filter
	return nil
}

// Respond drops the client's bytes, none of which go further, writes the
// answer and closes the connection once it is written.
func (h *netHost) Respond(data []byte) error {
	if h.filter == 0 {
		return errNoConnection
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	if len(data) > 0 {
		pin.Pin(&data[0])
	}
	C.dp_net_drain(h.filter, C.dp_net_read_size(h.filter))
	if !C.dp_net_write(h.filter, bytesBuffer(data), false) || !C.dp_net_close(h.filter, C.dp_close_flush_write) {
		return errors.New("answering the connection failed")
	}
	return nil
}

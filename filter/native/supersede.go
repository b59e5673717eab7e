//go:build cgo

package main

import (
	"sync"
	"sync/atomic"
)

// A config push gives a tcp route a new network filter config while
// connections accepted under the old one may still be sending their
// heads. As in the Wasm filter, a handshake is decided by its route's
// latest policy, so a key removed while a client was still sending its
// head is refused and a key added lets it in: each new config is also
// configured, under a root id of its own, in every older live config of
// the same plugin, whose gates then decide their pending handshakes by it.

// supersedeRoots is where the root ids of newer configs start in an older
// config's gates; connection ids stay below it.
const supersedeRoots = 1 << 31

// tcpConfigs are the live tcp configs by plugin name, oldest first.
var tcpConfigs = struct {
	sync.Mutex
	live map[string][]*netConfig
	gen  atomic.Uint32
}{live: map[string][]*netConfig{}}

// register makes c its plugin's latest config.
func (c *netConfig) register() {
	c.root = supersedeRoots + tcpConfigs.gen.Add(1)%(supersedeRoots-1)
	tcpConfigs.Lock()
	defer tcpConfigs.Unlock()
	for _, old := range tcpConfigs.live[c.plugin] {
		old.supersede(c, c.root)
	}
	tcpConfigs.live[c.plugin] = append(tcpConfigs.live[c.plugin], c)
}

// catchUp configures the plugin's latest config, if it is newer than c,
// in a gate c makes after it was superseded (a worker past the count
// Envoy gave). tcpConfigs is held: it is locked before any config's mu.
func (c *netConfig) catchUp(w *netWorker) {
	live := tcpConfigs.live[c.plugin]
	if len(live) == 0 || live[len(live)-1] == c {
		return
	}
	newer := live[len(live)-1]
	if w.g.Configure(&configuringHost{netHost: w.h, raw: newer.raw}, newer.root, c.plugin) {
		w.superseded = newer.root
	}
}

// unregister forgets a config Envoy destroyed.
func (c *netConfig) unregister() {
	tcpConfigs.Lock()
	defer tcpConfigs.Unlock()
	live := tcpConfigs.live[c.plugin]
	for i, x := range live {
		if x == c {
			live = append(live[:i:i], live[i+1:]...)
			break
		}
	}
	if len(live) == 0 {
		delete(tcpConfigs.live, c.plugin)
		return
	}
	tcpConfigs.live[c.plugin] = live
}

// supersede configures newer's policy in c's gates under root, in place
// of the config that superseded c before (its policy is dropped, so a
// long-lived connection's config holds at most two).
func (c *netConfig) supersede(newer *netConfig, root uint32) {
	for _, w := range c.allWorkers() {
		w.mu.Lock()
		if w.superseded != 0 {
			w.g.Delete(w.h, w.superseded)
		}
		if w.g.Configure(&configuringHost{netHost: w.h, raw: newer.raw}, root, c.plugin) {
			w.superseded = root
		} else {
			w.superseded = 0
		}
		w.mu.Unlock()
	}
}

// configuringHost is a worker's host that reads another config's JSON.
type configuringHost struct {
	*netHost
	raw []byte
}

func (h *configuringHost) PluginConfiguration() ([]byte, error) { return h.raw, nil }

package translate

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// ListenerUpdate is a listener a change adds, replaces or removes: the
// part of a change that goes through LDS.
type ListenerUpdate struct {
	Name   string
	Action Action
	// Address is ip:port of the listener being served: where its
	// connections are counted. Empty for a new or an internal listener.
	Address string
}

// Drains reports whether Envoy drains the listener's connections: it does
// for a listener it replaces or removes, live calls included. A new
// listener takes nothing from the others.
func (u ListenerUpdate) Drains() bool { return u.Action != Added }

// ListenerUpdates picks the listener changes out of a Diff from current
// and gives each the address its connections are counted under.
func ListenerUpdates(changes []Change, current xdstype.Resources) []ListenerUpdate {
	var out []ListenerUpdate
	for _, c := range changes {
		if c.Type != xdstype.Name(resource.ListenerType) {
			continue
		}
		u := ListenerUpdate{Name: c.Name, Action: c.Action}
		if c.Action != Added {
			u.Address = listenerAddress(current, c.Name)
		}
		out = append(out, u)
	}
	return out
}

func listenerAddress(res xdstype.Resources, name string) string {
	for _, r := range res[resource.ListenerType] {
		l, ok := r.(*listenerv3.Listener)
		if !ok || l.GetName() != name {
			continue
		}
		if sa := l.GetAddress().GetSocketAddress(); sa != nil {
			return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
		}
	}
	return ""
}

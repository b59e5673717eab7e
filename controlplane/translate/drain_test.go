package translate

import (
	"slices"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

func TestListenerUpdates(t *testing.T) {
	base, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	current, err := Translate(base, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(p *policyv1.Policy)
		want []ListenerUpdate
	}{
		{"a route change updates no listener", func(p *policyv1.Policy) {
			p.Routes[0].IdleTimeout = nil
		}, nil},
		{"a new listener drains nothing", func(p *policyv1.Policy) {
			p.Listeners = append(p.Listeners, &policyv1.Listener{Name: "second", Address: "127.0.0.1:10400"})
			for _, r := range p.Routes {
				if r.GetMode() != "tcp" {
					r.Listener = "public"
				}
			}
		}, []ListenerUpdate{{"second", Added, ""}}},
		{"auth off on a tcp route travels by ECDS: the module stays", func(p *policyv1.Policy) {
			for _, r := range p.Routes {
				if r.GetMode() == "tcp" {
					r.Auth = ""
				}
			}
		}, nil},
		{"a raw tcp route replaces its listener and removes the deny listener", func(p *policyv1.Policy) {
			for _, r := range p.Routes {
				if r.GetMode() == "tcp" {
					r.Auth = ""
					r.Tcp.Raw = true
				}
			}
		}, []ListenerUpdate{{"directpipe-deny", Removed, ""}, {"tcp-voice-raw", Modified, "127.0.0.1:10001"}}},
		{"HTTP/2 off replaces the HTTP listener", func(p *policyv1.Policy) {
			p.Listeners[0].Http2 = false
		}, []ListenerUpdate{{"public", Modified, "127.0.0.1:10000"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.LoadFile("testdata/example.in.yaml")
			if err != nil {
				t.Fatal(err)
			}
			tt.edit(p)
			next, err := Translate(p, testOptions)
			if err != nil {
				t.Fatal(err)
			}
			got := ListenerUpdates(mustDiff(t, current, next), current)
			if !slices.Equal(got, tt.want) {
				t.Errorf("ListenerUpdates = %+v, want %+v", got, tt.want)
			}
			for _, u := range got {
				if u.Drains() != (u.Action != Added) {
					t.Errorf("%s: Drains() = %v", u.Name, u.Drains())
				}
			}
		})
	}
}

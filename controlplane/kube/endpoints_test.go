package kube

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestSliceEndpoints(t *testing.T) {
	yes, no := true, false
	port, named := int32(8080), "ws"
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: named, Port: 80}}}}
	ep := func(addr string, ready, serving, terminating *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
	}
	slice := func(eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
		return discoveryv1.EndpointSlice{Ports: []discoveryv1.EndpointPort{{Name: &named, Port: &port}}, Endpoints: eps}
	}
	cases := []struct {
		name           string
		ref            ServiceRef
		slices         []discoveryv1.EndpointSlice
		ready, drained []string
	}{
		{"ready serves", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.1", &yes, &yes, &no))}, []string{"10.0.0.1:8080"}, nil},
		{"unset ready means ready", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.1", nil, nil, nil))}, []string{"10.0.0.1:8080"}, nil},
		{"terminating but serving drains", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.2", &no, &yes, &yes))}, nil, []string{"10.0.0.2:8080"}},
		{"terminating and not serving gets nothing", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.2", &no, &no, &yes))}, nil, nil},
		{"not ready gets nothing", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.3", &no, &no, &no))}, nil, nil},
		{"ipv6 is bracketed", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("fd00::1", &yes, &yes, &no))}, []string{"[fd00::1]:8080"}, nil},
		{"unknown service port", ServiceRef{Port: 81}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.1", &yes, &yes, &no))}, nil, nil},
		{"ready in one slice wins", ServiceRef{Port: 80}, []discoveryv1.EndpointSlice{slice(ep("10.0.0.1", &no, &yes, &yes)), slice(ep("10.0.0.1", &yes, &yes, &no))}, []string{"10.0.0.1:8080"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := SliceEndpoints(c.ref, svc, c.slices)
			if !slices.Equal(got.Ready, c.ready) || !slices.Equal(got.Draining, c.drained) {
				t.Errorf("got ready %v draining %v, want %v and %v", got.Ready, got.Draining, c.ready, c.drained)
			}
		})
	}
}

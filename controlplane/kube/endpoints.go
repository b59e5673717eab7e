package kube

import (
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// SliceEndpoints maps a Service port's EndpointSlices onto endpoints:
// ready ones serve; terminating ones that still serve drain (their streams
// go on, new ones go elsewhere); the rest get nothing. svc gives the
// name of the port numbered ref.Port, which is how slices name it (a
// slice lists target ports, which may differ from the Service's).
func SliceEndpoints(ref ServiceRef, svc *corev1.Service, sliceList []discoveryv1.EndpointSlice) Endpoints {
	portName, ok := servicePortName(svc, ref.Port)
	if !ok {
		return Endpoints{}
	}
	ready, draining := map[string]bool{}, map[string]bool{}
	for _, s := range sliceList {
		port, ok := slicePort(s.Ports, portName)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			c := ep.Conditions
			isReady := c.Ready == nil || *c.Ready
			serving := c.Serving == nil && isReady || c.Serving != nil && *c.Serving
			terminating := c.Terminating != nil && *c.Terminating
			for _, a := range ep.Addresses {
				addr := net.JoinHostPort(a, strconv.Itoa(int(port)))
				switch {
				case isReady && !terminating:
					ready[addr] = true
				case serving && terminating:
					draining[addr] = true
				}
			}
		}
	}
	out := Endpoints{}
	for a := range ready {
		out.Ready = append(out.Ready, a)
		delete(draining, a) // one slice says ready: it takes streams
	}
	for a := range draining {
		out.Draining = append(out.Draining, a)
	}
	slices.Sort(out.Ready)
	slices.Sort(out.Draining)
	return out
}

func servicePortName(svc *corev1.Service, port int32) (string, bool) {
	if svc == nil {
		return "", false
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return p.Name, true
		}
	}
	return "", false
}

func slicePort(ports []discoveryv1.EndpointPort, name string) (int32, bool) {
	for _, p := range ports {
		n := ""
		if p.Name != nil {
			n = *p.Name
		}
		if n == name && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

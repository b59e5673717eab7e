package auth

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/directpipe/directpipe/filter/contract"
)

// ClientList is a route's client address lists, parsed. The zero of its
// lists means: deny nothing, allow any.
type ClientList struct {
	allow, deny []netip.Prefix
}

// ParseClients checks a route's lists: each entry a CIDR in its canonical
// form (no host bits set, so "10.0.0.1/8" is refused rather than read as a
// /8 its writer may not have meant), at most contract.MaxClientCIDRs in
// each list. A nil spec is no list.
func ParseClients(spec *contract.Clients) (*ClientList, error) {
	if spec == nil {
		return nil, nil
	}
	var l ClientList
	var err error
	if l.allow, err = parsePrefixes("allow", spec.Allow); err != nil {
		return nil, err
	}
	if l.deny, err = parsePrefixes("deny", spec.Deny); err != nil {
		return nil, err
	}
	if len(l.allow) == 0 && len(l.deny) == 0 {
		return nil, errors.New("clients: neither allow nor deny")
	}
	return &l, nil
}

func parsePrefixes(field string, cidrs []string) ([]netip.Prefix, error) {
	if len(cidrs) > contract.MaxClientCIDRs {
		return nil, fmt.Errorf("clients.%s: %d entries, at most %d", field, len(cidrs), contract.MaxClientCIDRs)
	}
	out := make([]netip.Prefix, 0, len(cidrs))
	for i, s := range cidrs {
		p, err := ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("clients.%s[%d]: %w", field, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseCIDR reads one list entry: an IPv4 or IPv6 prefix without a zone,
// with no host bits set. The control plane's validation uses it too, so
// the two sides accept the same entries.
func ParseCIDR(s string) (netip.Prefix, error) {
	if len(s) > 64 {
		return netip.Prefix{}, errors.New("not a CIDR: too long")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; the prefix is %s", s, p.Masked())
	}
	return p, nil
}

// ClientList returns the policy's client address lists, nil for none. In
// the one-policy form (the tcp module) they guard every connection.
func (p *Policy) ClientList() *ClientList { return p.clients }

// Allows reports whether a client at address (as Envoy gives
// source.address: "ip:port", "[ipv6]:port", or a bare IP) may open a
// stream. Deny wins over allow. An address that is not an IP (a pipe, an
// internal listener) or cannot be read is refused: a list that cannot be
// checked must not let the client through.
func (l *ClientList) Allows(address string) bool {
	if l == nil {
		return true
	}
	ip, ok := clientIP(address)
	if !ok {
		return false
	}
	for _, p := range l.deny {
		if p.Contains(ip) {
			return false
		}
	}
	if len(l.allow) == 0 {
		return true
	}
	for _, p := range l.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP reads the IP of an address. An IPv4-mapped IPv6 address
// ("::ffff:10.0.0.1", what a dual-stack socket reports for an IPv4 client)
// is matched as the IPv4 address it is, so an IPv4 list holds on it.
func clientIP(address string) (netip.Addr, bool) {
	if len(address) > 128 {
		return netip.Addr{}, false
	}
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(address); err == nil {
		ip = ap.Addr()
	} else if a, err := netip.ParseAddr(address); err == nil {
		ip = a
	} else {
		return netip.Addr{}, false
	}
	if ip.Zone() != "" {
		ip = ip.WithZone("")
	}
	return ip.Unmap(), true
}

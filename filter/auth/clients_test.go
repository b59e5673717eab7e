package auth

import (
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

func TestParseClients(t *testing.T) {
	many := make([]string, contract.MaxClientCIDRs+1)
	for i := range many {
		many[i] = "10.0.0.0/8"
	}
	tests := []struct {
		name    string
		spec    *contract.Clients
		wantErr string
	}{
		{"nil is no list", nil, ""},
		{"ipv4 and ipv6", &contract.Clients{Allow: []string{"10.0.0.0/8", "2001:db8::/32"}, Deny: []string{"10.1.0.0/16"}}, ""},
		{"a host", &contract.Clients{Deny: []string{"192.0.2.7/32", "::1/128"}}, ""},
		{"empty lists", &contract.Clients{}, "neither allow nor deny"},
		{"bare address", &contract.Clients{Allow: []string{"10.0.0.1"}}, "not a CIDR"},
		{"host bits", &contract.Clients{Allow: []string{"10.0.0.1/8"}}, "host bits set; the prefix is 10.0.0.0/8"},
		{"zone", &contract.Clients{Allow: []string{"fe80::%eth0/64"}}, "not a CIDR"},
		{"bad bits", &contract.Clients{Deny: []string{"10.0.0.0/33"}}, "not a CIDR"},
		{"garbage", &contract.Clients{Deny: []string{"example.com/8"}}, "clients.deny[0]"},
		{"too long", &contract.Clients{Deny: []string{strings.Repeat("1", 65)}}, "too long"},
		{"too many", &contract.Clients{Allow: many}, "at most 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseClients(tt.spec)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseClients: %v", err)
				}
				if (l == nil) != (tt.spec == nil) {
					t.Fatalf("list %v for spec %v", l, tt.spec)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseClients: error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestClientListAllows(t *testing.T) {
	lists := map[string]*contract.Clients{
		"allow loopback":      {Allow: []string{"127.0.0.0/8"}},
		"allow private":       {Allow: []string{"10.0.0.0/8"}},
		"deny loopback":       {Deny: []string{"127.0.0.0/8"}},
		"deny wins":           {Allow: []string{"127.0.0.0/8"}, Deny: []string{"127.0.0.1/32"}},
		"allow v6":            {Allow: []string{"2001:db8::/32"}},
		"allow v4, deny none": {Allow: []string{"192.0.2.0/24"}},
	}
	tests := []struct {
		list, addr string
		want       bool
	}{
		{"allow loopback", "127.0.0.1:40000", true},
		{"allow loopback", "127.9.9.9:1", true},
		{"allow loopback", "10.0.0.1:40000", false},
		{"allow private", "127.0.0.1:40000", false},
		{"allow private", "10.200.0.1:5", true},
		{"allow private", "10.200.0.1", true}, // no port
		{"deny loopback", "127.0.0.1:40000", false},
		{"deny loopback", "192.0.2.1:40000", true},
		{"deny loopback", "[::1]:40000", true},
		{"deny wins", "127.0.0.1:1", false},
		{"deny wins", "127.0.0.2:1", true},
		{"allow v6", "[2001:db8::1]:443", true},
		{"allow v6", "[2001:db9::1]:443", false},
		{"allow v6", "[fe80::1%eth0]:443", false},
		// A dual-stack socket's view of an IPv4 client.
		{"allow v4, deny none", "[::ffff:192.0.2.9]:443", true},
		{"deny loopback", "[::ffff:127.0.0.1]:443", false},
		// Not an IP: refused whatever the list says.
		{"deny loopback", "", false},
		{"deny loopback", "envoy://internal_client_address/", false},
		{"deny loopback", "/tmp/sock", false},
		{"deny loopback", strings.Repeat("1", 200), false},
	}
	for _, tt := range tests {
		l, err := ParseClients(lists[tt.list])
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Allows(tt.addr); got != tt.want {
			t.Errorf("%s: Allows(%q) = %v, want %v", tt.list, tt.addr, got, tt.want)
		}
	}
	var none *ClientList
	if !none.Allows("garbage") {
		t.Error("no list must allow any client")
	}
}

func FuzzClientListAllows(f *testing.F) {
	for _, s := range []string{"127.0.0.1:1", "[::1]:2", "10.0.0.1", "[::ffff:10.0.0.1]:3", "", "x:y", "[fe80::1%eth0]:1"} {
		f.Add(s, "10.0.0.0/8")
	}
	f.Fuzz(func(t *testing.T, addr, cidr string) {
		l, err := ParseClients(&contract.Clients{Deny: []string{cidr}})
		if err != nil {
			return
		}
		deny := l.Allows(addr)
		l2, _ := ParseClients(&contract.Clients{Allow: []string{cidr}})
		allow := l2.Allows(addr)
		// An address is refused by one of the two lists at least, and
		// allowed by both never.
		if deny && allow {
			t.Fatalf("%q passes both allow and deny of %q", addr, cidr)
		}
	})
}

func TestConfigClients(t *testing.T) {
	routed, err := ParseConfig([]byte(`{"policies":{},"clients":{"lan":{"allow":["10.0.0.0/8"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if l := routed.Clients("lan"); l == nil || l.Allows("127.0.0.1:1") || !l.Allows("10.0.0.1:1") {
		t.Errorf("route lan's list: %+v", l)
	}
	if l := routed.Clients("other"); l != nil {
		t.Errorf("a route without a list got %+v", l)
	}
	one, err := ParseConfig([]byte(single(`"clients":{"deny":["127.0.0.0/8"]}`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"a", "b", ""} {
		if l := one.Clients(route); l == nil || l.Allows("127.0.0.1:1") {
			t.Errorf("a one-policy document's list does not guard route %q", route)
		}
	}
}

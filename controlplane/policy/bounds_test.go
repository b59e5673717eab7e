package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

// withRoutes is validPolicy with n more http routes, each built by route.
func withRoutes(n int, route func(i int) string) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(route(i))
	}
	return strings.Replace(validPolicy, "routes:\n", "routes:\n"+b.String(), 1)
}

func TestBounds(t *testing.T) {
	plain := func(i int) string {
		return fmt.Sprintf("  - { name: r%d, match: { prefix: /r/%d/ }, kind: http, backend: voice }\n", i, i)
	}
	tests := []struct {
		name  string
		input string
		want  string // "": valid
	}{
		{"as many routes as allowed", withRoutes(MaxRoutes-1, plain), ""},
		{"one route too many", withRoutes(MaxRoutes, plain), "routes: 10001 entries, more than the 10000 allowed"},
		{"a 1 MiB prefix", withRoutes(1, func(int) string {
			return "  - { name: long, match: { prefix: /" + strings.Repeat("a", 1<<20) + " }, kind: http, backend: voice }\n"
		}), "routes[0].match.prefix: 1048577 bytes, more than the 4096 allowed"},
		{"a prefix as long as allowed", withRoutes(1, func(int) string {
			return "  - { name: long, match: { prefix: /" + strings.Repeat("a", MaxPathBytes-1) + " }, kind: http, backend: voice }\n"
		}), ""},
		{"a long path", withRoutes(1, func(int) string {
			return "  - { name: long, match: { path: /" + strings.Repeat("a", MaxPathBytes) + " }, kind: http, backend: voice }\n"
		}), "routes[0].match.path: 4097 bytes"},
		{"too many header matchers", withRoutes(1, func(int) string {
			return "  - { name: h, match: { prefix: /h/, headers: [" + strings.Repeat("{ name: x-a, present: true },", MaxHeadersPerRoute+1) + "] }, kind: http, backend: voice }\n"
		}), "routes[0].match.headers: 33 entries"},
		{"a long header value", withRoutes(1, func(int) string {
			return "  - { name: h, match: { prefix: /h/, headers: [{ name: x-a, exact: " + strings.Repeat("v", MaxHeaderValueBytes+1) + " }] }, kind: http, backend: voice }\n"
		}), "routes[0].match.headers[0]: value of 1025 bytes"},
		{"too many endpoints", strings.Replace(validPolicy, "endpoints: [127.0.0.1:8081]", "endpoints: ["+strings.Repeat("127.0.0.1:8081, ", MaxEndpoints)+"127.0.0.1:8081]", 1), "backends[0].endpoints: 1001 entries"},
		{"a long header name", withRoutes(1, func(int) string {
			return "  - { name: h, match: { prefix: /h/, headers: [{ name: x-" + strings.Repeat("A", 1<<20) + ", present: true }] }, kind: http, backend: voice }\n"
		}), "is not a lower-case header name"},
		{"a long name", withRoutes(1, func(int) string {
			return "  - { name: " + strings.Repeat("R", 1<<20) + ", match: { prefix: /h/ }, kind: http, backend: voice }\n"
		}), "must be lower-case letters"},
		{"too many client cidrs", strings.Replace(validPolicy, "kind: websocket", "kind: websocket\n    clients: { deny: ["+strings.Repeat("10.0.0.0/8, ", contract.MaxClientCIDRs)+"10.0.0.0/8] }", 1),
			"routes[0].clients.deny: 257 entries, more than the 256 allowed"},
		{"as many client cidrs as allowed", strings.Replace(validPolicy, "kind: websocket", "kind: websocket\n    clients: { allow: ["+strings.Repeat("10.0.0.0/8, ", contract.MaxClientCIDRs-1)+"\"::/0\"], deny: [127.0.0.0/8] }", 1), ""},
		{"a long cidr", strings.Replace(validPolicy, "kind: websocket", "kind: websocket\n    clients: { deny: [1"+strings.Repeat("0", 1<<20)+"] }", 1), "not a CIDR: too long"},
		{"a long host", withRoutes(1, func(int) string {
			return "  - { name: h, match: { prefix: /h/, hosts: [" + strings.Repeat("a.", 200) + "com] }, kind: http, backend: voice }\n"
		}), "routes[0].match.hosts[0]: 403 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.input))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %.300v", err)
			case tt.want != "" && err == nil:
				t.Fatal("accepted")
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %.300q, want %q", err, tt.want)
			case tt.want != "" && len(err.Error()) > 4096:
				t.Fatalf("a bound's error runs to %d bytes", len(err.Error()))
			}
		})
	}
}

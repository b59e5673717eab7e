package bootstrap

import (
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
)

func TestRender(t *testing.T) {
	for _, delta := range []bool{false, true} {
		out, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000, Delta: delta})
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(out, &v); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, out)
		}
		want := "api_type: GRPC"
		if delta {
			want = "api_type: DELTA_GRPC"
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("delta=%v: %q missing", delta, want)
		}
	}
	if _, err := Render(Params{}); err == nil {
		t.Error("empty params accepted")
	}
}

func TestRenderFleet(t *testing.T) {
	out, err := Render(Params{
		NodeID: "edge-1", Cluster: "c", AdminPort: 9901,
		XDSAddrs:     []string{"10.0.0.1:18000", "cp2.example.com:18000"},
		ModulesAddrs: []string{"10.0.0.1:18003"},
		TLS:          &TLS{CA: "/etc/dp/ca.crt", Cert: "/etc/dp/edge-1.crt", Key: "/etc/dp/edge-1.key"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		StaticResources struct {
			Clusters []struct {
				Name           string `json:"name"`
				Type           string `json:"type"`
				LoadAssignment struct {
					Endpoints []struct {
						LbEndpoints []any `json:"lb_endpoints"`
					} `json:"endpoints"`
				} `json:"load_assignment"`
				TransportSocket *struct {
					TypedConfig map[string]any `json:"typed_config"`
				} `json:"transport_socket"`
			} `json:"clusters"`
		} `json:"static_resources"`
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, c := range doc.StaticResources.Clusters {
		got[c.Name] = fmt.Sprintf("%s %d tls=%v", c.Type, len(c.LoadAssignment.Endpoints[0].LbEndpoints), c.TransportSocket != nil)
	}
	want := map[string]string{"xds_cluster": "STRICT_DNS 2 tls=true", ModuleCluster: "STATIC 1 tls=true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("clusters %v, want %v", got, want)
	}
	for _, s := range []string{`sni: "directpipe-control-plane"`, "connection_keepalive: { interval: 5s, timeout: 3s }", "retry_back_off"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("%q missing", s)
		}
	}
	if ModuleCluster != translate.ModuleCluster {
		t.Errorf("the bootstrap's module cluster %q is not the one filter configs name, %q", ModuleCluster, translate.ModuleCluster)
	}
	for _, bad := range []Params{
		{NodeID: "n", Cluster: "c", AdminPort: 1, XDSAddrs: []string{"no-port"}},
		{NodeID: "n", Cluster: "c", AdminPort: 1, XDSAddrs: []string{"h:0"}},
		{NodeID: "n", Cluster: "c", AdminPort: 1, XDSAddrs: []string{"h:1"}, TLS: &TLS{CA: "ca"}},
	} {
		if _, err := Render(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestRenderConnectionLimit: every bootstrap bounds client connections
// through the overload manager's global monitor (without one, Envoy warns
// at start that nothing limits them).
func TestRenderConnectionLimit(t *testing.T) {
	for _, tc := range []struct {
		max  int
		want string
	}{
		{0, "max_active_downstream_connections: 50000"},
		{1200, "max_active_downstream_connections: 1200"},
	} {
		out, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000, MaxConnections: tc.max})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "envoy.resource_monitors.global_downstream_max_connections") || !strings.Contains(string(out), tc.want) {
			t.Errorf("max %d: no global connection monitor with %q:\n%s", tc.max, tc.want, out)
		}
	}
	if _, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000, MaxConnections: -1}); err == nil {
		t.Error("a negative limit was accepted")
	}
}

// TestRenderReleasesFreeMemory: what V8 frees after compiling the module
// goes back to the system instead of staying in the allocator's page heap
// (measured by `make bench`'s memory table).
func TestRenderReleasesFreeMemory(t *testing.T) {
	out, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"memory_allocator_manager:", "bytes_to_release: 33554432", "memory_release_interval: 1s"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// TestRenderAdmin: the admin interface is a 0600 Unix socket or a
// loopback port, never both, and the node reports it in its metadata.
func TestRenderAdmin(t *testing.T) {
	tests := []struct {
		name   string
		params Params
		want   []string
	}{
		{"socket", Params{AdminSocket: "/run/dp/admin.sock"}, []string{`pipe: { path: "/run/dp/admin.sock", mode: 384 }`, `directpipe.envoy_admin: "unix:/run/dp/admin.sock"`}},
		{"port", Params{AdminPort: 9901}, []string{"socket_address: { address: 127.0.0.1, port_value: 9901 }", `directpipe.envoy_admin: "127.0.0.1:9901"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.params
			p.NodeID, p.Cluster, p.XDSPort = "n", "c", 18000
			out, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := yaml.Unmarshal(out, &v); err != nil {
				t.Fatalf("not YAML: %v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("no %q in:\n%s", w, out)
				}
			}
		})
	}
	if _, err := Render(Params{NodeID: "n", Cluster: "c", XDSPort: 18000, AdminPort: 9901, AdminSocket: "/a.sock"}); err == nil {
		t.Error("both an admin port and an admin socket were accepted")
	}
}

// TestRenderFilter: the node names the build of the handshake filter it
// runs in its metadata, where the control plane reads it; an unknown build
// is refused.
func TestRenderFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   string
	}{
		{"", ""},
		{FilterWasm, `directpipe.filter: "wasm"`},
		{FilterNative, `directpipe.filter: "native"`},
	} {
		out, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000, Filter: tc.filter})
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Node struct {
				Metadata map[string]string `json:"metadata"`
			} `json:"node"`
		}
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("filter %q: %v", tc.filter, err)
		}
		if got := doc.Node.Metadata[xds.FilterMetadataKey]; got != tc.filter {
			t.Errorf("filter %q: node metadata says %q:\n%s", tc.filter, got, out)
		}
	}
	if _, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000, Filter: "v8"}); err == nil {
		t.Error("an unknown filter was accepted")
	}
}

func TestRenderSDSAndReady(t *testing.T) {
	tls := &TLS{CA: "/etc/envoy/tls/ca.crt", Cert: "/etc/envoy/tls/tls.crt", Key: "/etc/envoy/tls/tls.key", SDSDir: "/etc/envoy/config"}
	out, err := Render(Params{NodeID: "n", Cluster: "c", AdminSocket: "/run/a.sock", XDSAddrs: []string{"cp:18000"},
		ModulesAddrs: []string{"cp:18003"}, TLS: tls, ReadyAddr: "0.0.0.0:19001"})
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(out, &v); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		`path: "/etc/envoy/config/directpipe_client_cert.yaml"`, `path: "/etc/envoy/config/directpipe_ca.yaml"`,
		"envoy.filters.http.health_check", "port_value: 19001", `matcher: { exact: "directpipe-control-plane" }`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("%q missing", want)
		}
	}
	if strings.Contains(s, "tls_certificates:") || strings.Contains(s, "/etc/envoy/tls/tls.key") {
		t.Error("with SDS the bootstrap still names the certificate files itself")
	}

	files, err := SDSFiles(*tls)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(files["/etc/envoy/config/directpipe_client_cert.yaml"])
	ca := string(files["/etc/envoy/config/directpipe_ca.yaml"])
	for _, c := range []struct{ file, want string }{
		{cert, `private_key: { filename: "/etc/envoy/tls/tls.key" }`},
		{cert, `watched_directory: { path: "/etc/envoy/tls" }`},
		{ca, `trusted_ca: { filename: "/etc/envoy/tls/ca.crt" }`},
		{ca, `watched_directory: { path: "/etc/envoy/tls" }`},
	} {
		if !strings.Contains(c.file, c.want) {
			t.Errorf("%q missing from\n%s", c.want, c.file)
		}
	}
	if len(files) != 2 {
		t.Errorf("%d SDS files, want 2", len(files))
	}

	if _, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 1, XDSPort: 2, ReadyAddr: "envoy:19001"}); err == nil {
		t.Error("a ready address by name accepted")
	}
	if _, err := SDSFiles(TLS{CA: "a", Cert: "b", Key: "c"}); err == nil {
		t.Error("SDS files without a directory")
	}
}

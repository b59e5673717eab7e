package translate

import (
	"strings"
	"testing"

	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

func TestModuleSource(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	p := &policyv1.Policy{}
	res, err := HandshakeConfig(p, Options{Module: ModuleSource{URL: "https://cp/modules/" + sha + ".wasm", SHA256: sha}})
	if err != nil {
		t.Fatal(err)
	}
	var w wasmfilterv3.Wasm
	if err := res.GetTypedConfig().UnmarshalTo(&w); err != nil {
		t.Fatal(err)
	}
	vm := w.GetConfig().GetVmConfig()
	remote := vm.GetCode().GetRemote()
	if remote.GetSha256() != sha || remote.GetHttpUri().GetCluster() != ModuleCluster || !vm.GetNackOnCodeCacheMiss() {
		t.Errorf("remote module: %v", vm)
	}
	local, _ := HandshakeConfig(p, Options{Module: ModuleSource{File: "/m.wasm"}})
	local.GetTypedConfig().UnmarshalTo(&w)
	if w.GetConfig().GetVmConfig().GetNackOnCodeCacheMiss() || w.GetConfig().GetVmConfig().GetCode().GetLocal().GetFilename() != "/m.wasm" {
		t.Errorf("local module: %v", w.GetConfig().GetVmConfig())
	}
	for _, bad := range []ModuleSource{{}, {File: "/m.wasm", URL: "https://x"}, {URL: "https://x", SHA256: "ABC"}, {URL: "https://x"}} {
		if _, err := Translate(p, Options{Module: bad}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

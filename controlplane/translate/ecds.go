package translate

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/contract"
)

const (
	wasmTypeURL = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
	// wasmVMID is the handshake module's VM, shared by every plugin of
	// the HTTP filter and of the tcp mode network filters.
	wasmVMID = "directpipe"
)

// HandshakeConfig is the ECDS resource carrying the handshake filter and its
// configuration: the auth policies and their keys, and the client address
// lists of the routes that have them. Which policy guards a
// route is in the route's metadata (tagAuth), so a change of routes alone
// leaves this resource as it was, and Envoy does not validate and load a
// new plugin configuration for it.
func HandshakeConfig(p *policyv1.Policy, opts Options) (*corev3.TypedExtensionConfig, error) {
	cfg := contract.Config{Policies: map[string]*contract.Policy{}}
	for _, a := range p.GetAuthPolicies() {
		cfg.Policies[a.GetName()] = authPolicy(a, opts.ResolvedKeys[a.GetName()], opts)
	}
	// Client lists are keyed by route name, which the module reads for
	// every handshake anyway: a change of a list is an update of this
	// resource, never of a listener or a route.
	for _, r := range p.GetRoutes() {
		if isTCP(r) || r.GetClients() == nil {
			continue
		}
		if cfg.Clients == nil {
			cfg.Clients = map[string]*contract.Clients{}
		}
		cfg.Clients[r.GetName()] = clientLists(r.GetClients())
	}
	doc, err := filterDoc(cfg)
	if err != nil {
		return nil, fmt.Errorf("translate: filter config: %w", err)
	}
	if opts.Filter == FilterNative {
		return nativeHandshakeConfig(opts.NativeModule, doc), nil
	}
	wasm := &wasmfilterv3.Wasm{Config: pluginConfig(HandshakeFilterName, opts.Module, doc)}
	return &corev3.TypedExtensionConfig{Name: HandshakeFilterName, TypedConfig: mustAny(wasm)}, nil
}

// clientLists is a route's client address lists as the module reads
// them.
func clientLists(c *policyv1.ClientAddresses) *contract.Clients {
	if c == nil {
		return nil
	}
	return &contract.Clients{Allow: c.GetAllow(), Deny: c.GetDeny()}
}

// pluginConfig runs the module's plugin with a JSON configuration; its
// root id is its name, which tells the module an HTTP plugin from a tcp
// one.
func pluginConfig(name string, module ModuleSource, doc []byte) *wasmv3.PluginConfig {
	return &wasmv3.PluginConfig{
		Name:          name,
		RootId:        name,
		Vm:            &wasmv3.PluginConfig_VmConfig{VmConfig: vmConfig(module)},
		Configuration: mustAny(wrapperspb.String(string(doc))),
		// A filter that cannot run must not let callers through, and a
		// VM that traps must not stay dead: with FAIL_RELOAD, the next
		// request or connection after a runtime error starts a new VM
		// (at most once per reloadBackoff), and until then, as on any
		// other failure, the plugin fails closed. The HTTP and tcp
		// plugins share the VM, so a trap in either takes both down:
		// the reload is what bounds that to about a second.
		FailurePolicy: wasmv3.FailurePolicy_FAIL_RELOAD,
		ReloadConfig: &wasmv3.ReloadConfig{
			Backoff: &corev3.BackoffStrategy{BaseInterval: durationpb.New(reloadBackoff)},
		},
	}
}

// reloadBackoff is the least time between two reloads of a failed VM on
// a worker (Envoy adds up to half of it as jitter): a module that traps at
// once on every start costs a worker one VM start a second, not one per
// request.
const reloadBackoff = time.Second

// vmConfig is the one VM configuration of every plugin. Envoy keys its VMs
// by vm_id, VM configuration and code: plugins whose three are equal share
// one compiled module and one instance per worker, the HTTP filter and the
// tcp network filters alike, and an update that leaves them equal (a key
// rotation, a route change) reuses the running VM. So nothing that policy
// decides belongs here: everything that changes is in the plugin's
// configuration. A remote module is named by its sha256, which changes
// only with the module.
func vmConfig(module ModuleSource) *wasmv3.VmConfig {
	return &wasmv3.VmConfig{
		VmId:    wasmVMID,
		Runtime: "envoy.wasm.runtime.v8",
		Code:    module.code(),
		// Envoy downloads a remote module in the background. With this, it
		// refuses (NACKs) a config whose module is not in its cache yet or
		// failed its sha256 check, and the previous config keeps serving;
		// without it, it would take the config and fail every request
		// until the download succeeds.
		NackOnCodeCacheMiss: module.remote(),
	}
}

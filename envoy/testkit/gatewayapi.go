package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GatewayAPICRDs are the standard-channel CRD files of the Gateway API
// kinds directpipe serves, read from the sigs.k8s.io/gateway-api module
// the project requires (the module ships them): the go command says where
// the module cache holds it, so the version is go.mod's, never a copy.
func GatewayAPICRDs() ([]string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return nil, fmt.Errorf("testkit: locating the gateway-api module: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	var files []string
	for _, kind := range []string{"gatewayclasses", "gateways", "httproutes", "referencegrants"} {
		f := filepath.Join(dir, "gateway.networking.k8s.io_"+kind+".yaml")
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("testkit: the gateway-api module lacks its CRDs: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}

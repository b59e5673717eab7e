//go:build wasip1

package store

import "errors"

// NewEtcd is not available on wasip1, where only the Wasm module is built
// (the etcd client needs file locks the platform does not have).
func NewEtcd(EtcdConfig) (Shared, error) {
	return nil, errors.New("the etcd store is not available on wasip1")
}

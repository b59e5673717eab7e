//go:build wasip1

package proxywasm

// statusCASMismatch is the spec's CasMismatch: another VM wrote the entry
// since it was read.
const statusCASMismatch Status = 8

// GetSharedData reads an entry of the data shared by every VM with this
// vm_id in the Envoy, and its compare-and-swap token (spec:
// proxy_get_shared_data); an absent entry reads as empty with token 0.
func GetSharedData(key string) ([]byte, uint32, error) {
	var addr, size, cas uint32
	st := Status(proxy_get_shared_data(key, &addr, &size, &cas))
	if st == StatusNotFound {
		return nil, 0, nil
	}
	if err := st.err("proxy_get_shared_data"); err != nil {
		return nil, 0, err
	}
	b, err := take(addr, size)
	return b, cas, err
}

// SetSharedData writes an entry if its token is still cas, or whatever it
// is when cas is 0 (spec: proxy_set_shared_data); false on a mismatch.
func SetSharedData(key string, value []byte, cas uint32) (bool, error) {
	var p *byte
	if len(value) > 0 {
		p = &value[0]
	}
	st := Status(proxy_set_shared_data(key, p, uint32(len(value)), cas))
	if st == statusCASMismatch {
		return false, nil
	}
	return st == StatusOK, st.err("proxy_set_shared_data")
}

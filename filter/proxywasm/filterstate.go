package proxywasm

import "google.golang.org/protobuf/encoding/protowire"

// filterStateSpanConnection is LifeSpan DownstreamConnection in Envoy's
// set_envoy_filter_state arguments: the object lives as long as the
// connection, which is where tcp_proxy looks for it.
const filterStateSpanConnection = 2

// encodeFilterStateArgs encodes Envoy's SetEnvoyFilterStateArguments
// message (path = 1, value = 2, span = 3) by hand: one small message does
// not justify generated code in the module.
func encodeFilterStateArgs(path, value string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, path)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, value)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, filterStateSpanConnection)
	return b
}

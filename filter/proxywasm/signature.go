package proxywasm

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// encodeVerifyArgs encodes Envoy's VerifySignatureArguments message
// (hash_function = 1, public_key = 2 as DER, signature = 3, text = 4) by
// hand, as encodeFilterStateArgs does.
func encodeVerifyArgs(hash string, spki, sig, text []byte) []byte {
	b := make([]byte, 0, len(hash)+len(spki)+len(sig)+len(text)+16)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, hash)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, spki)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, sig)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, text)
	return b
}

var errBadVerifyResult = errors.New("proxywasm: verify_signature returned a malformed result")

// decodeVerifyResult reads Envoy's VerifySignatureResult (result = 1,
// error = 2); unknown fields are skipped.
func decodeVerifyResult(b []byte) (bool, string, error) {
	var ok bool
	var msg string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, "", errBadVerifyResult
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return false, "", errBadVerifyResult
			}
			ok, b = v != 0, b[m:]
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeString(b)
			if m < 0 {
				return false, "", errBadVerifyResult
			}
			msg, b = v, b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return false, "", errBadVerifyResult
			}
			b = b[m:]
		}
	}
	return ok, msg, nil
}

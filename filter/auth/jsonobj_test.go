package auth

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// stdObject is what the filter did before parseObject, and the oracle it
// is held to: encoding/json's Unmarshal into a map, after a pass of
// encoding/json's tokenizer that refuses a top-level member named twice.
func stdObject(raw []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	var names []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := t.(string)
		if slices.Contains(names, name) {
			return nil, false
		}
		names = append(names, name)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, false
		}
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil, false
	}
	return m, true
}

func TestParseObjectMatchesEncodingJSON(t *testing.T) {
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	for _, doc := range []string{
		`{}`, ` {"a":1} `, "\t\n\r{\"a\":1}\n", `{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, `{"a":1,"\u0061":2}`,
		`{"exp":1e999}`, `{"exp":-1e999}`, `{"exp":1e-400}`, `{"exp":-0}`, `{"exp":0.5e+3}`, `{"exp":01}`, `{"exp":1.}`, `{"exp":.5}`,
		`{"exp":+1}`, `{"exp":1e}`, `{"exp":-}`, `{"exp":2000000000}`, `{"n":null,"t":true,"f":false}`, `{"x":nul}`, `{"x":tru}`,
		`{"s":"\u00e9\ud83d\ude00"}`, `{"s":"\ud83d"}`, `{"s":"\ud83dx"}`, `{"s":"\ud83d\u0041"}`, `{"s":"\ude00\ud83d"}`, `{"s":"\u12"}`, `{"s":"\uZZZZ"}`,
		`{"s":"\ud83d\uZZZZ"}`, `{"s":"a\/b\"\\\b\f\n\r\t"}`, `{"s":"\x"}`, "{\"s\":\"\x01\"}", "{\"s\":\"\xff\xfe\"}", "{\"s\":\"\xe2\x82\"}", "{\"\xff\":1}",
		`{"a":[1,"x",{"b":[]},[]]}`, `{"a":[1,]}`, `{"a":[,1]}`, `{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{"a" 1}`, `{"a":1 "b":2}`, `{"a":1}x`, `{"a":1}{}`,
		`[]`, `"s"`, `1`, `null`, ``, `{`, `{"a":1`, `{"a":"`, `{"a":[`, "\uFEFF{}", `{"a":` + deep + `}`, `{"a":` + deep[1:len(deep)-1] + `}`,
		`{"crit":null}`, `{"sub":"alice","exp":2000000000,"aud":["a","b"],"scope":"x y"}`,
	} {
		got, gotOK := parseObject([]byte(doc))
		want, wantOK := stdObject([]byte(doc))
		if gotOK != wantOK || !reflect.DeepEqual(got, want) {
			short := doc
			if len(short) > 60 {
				short = short[:60] + "…"
			}
			t.Errorf("%q: parseObject %v %v, encoding/json %v %v", short, got, gotOK, want, wantOK)
		}
	}
}

func FuzzParseObject(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[true,false,null],"c":{"d":"\u00e9"}}`, `{"a":1,"a":2}`, `{"s":"\ud83d\ude00"}`, `{"n":-1.5e-3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, gotOK := parseObject(raw)
		want, wantOK := stdObject(raw)
		if gotOK != wantOK || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: parseObject %v %v, encoding/json %v %v", raw, got, gotOK, want, wantOK)
		}
	})
}

package dpctl

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// fieldChange is one field a policy change sets, changes or clears.
type fieldChange struct {
	Path string `json:"path"`
	// Action is "+" (set), "~" (changed) or "-" (cleared).
	Action string `json:"action"`
	Old    string `json:"old,omitempty"`
	New    string `json:"new,omitempty"`
}

// maxDiffValue bounds a value a diff line quotes: a changed key set or a
// whole new route is named, not printed in full.
const maxDiffValue = 120

// policyDiff compares two policies field by field, with the field names of
// the file format. Items of a list whose items have a name are matched by
// name (routes[voice]), so that inserting a route does not show every
// route after it as changed; other lists are compared item by item.
func policyDiff(old, new *policyv1.Policy) ([]fieldChange, error) {
	a, err := generic(old)
	if err != nil {
		return nil, err
	}
	b, err := generic(new)
	if err != nil {
		return nil, err
	}
	var out []fieldChange
	diffValue("", a, b, &out)
	return out, nil
}

func generic(p *policyv1.Policy) (any, error) {
	if p == nil {
		p = &policyv1.Policy{}
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("render policy: %w", err)
	}
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		return nil, fmt.Errorf("render policy: %w", err)
	}
	return v, nil
}

func diffValue(path string, a, b any, out *[]fieldChange) {
	switch {
	case a == nil && b == nil:
		return
	case a == nil:
		*out = append(*out, fieldChange{Path: path, Action: "+", New: renderAt(path, b)})
		return
	case b == nil:
		*out = append(*out, fieldChange{Path: path, Action: "-", Old: renderAt(path, a)})
		return
	}
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			diffValue(joinPath(path, k), am[k], bm[k], out)
		}
		return
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		if named(al) && named(bl) {
			diffNamed(path, al, bl, out)
			return
		}
		for i := range max(len(al), len(bl)) {
			var x, y any
			if i < len(al) {
				x = al[i]
			}
			if i < len(bl) {
				y = bl[i]
			}
			diffValue(fmt.Sprintf("%s[%d]", path, i), x, y, out)
		}
		return
	}
	if ra, rb := render(a), render(b); ra != rb {
		if isSecretPath(path) {
			ra, rb = secret, secret
		}
		if isHashPath(path) {
			ra, rb = render(hashPrefixOf(a)), render(hashPrefixOf(b))
		}
		*out = append(*out, fieldChange{Path: path, Action: "~", Old: ra, New: rb})
	}
}

// diffNamed matches list items by their name: the old order first, then
// the items only the new list has, in its order.
func diffNamed(path string, a, b []any, out *[]fieldChange) {
	byName := map[string]any{}
	for _, item := range b {
		byName[nameOf(item)] = item
	}
	seen := map[string]bool{}
	for _, item := range a {
		n := nameOf(item)
		seen[n] = true
		diffValue(fmt.Sprintf("%s[%s]", path, n), item, byName[n], out)
	}
	for _, item := range b {
		if n := nameOf(item); !seen[n] {
			diffValue(fmt.Sprintf("%s[%s]", path, n), nil, item, out)
		}
	}
}

// named reports whether every item is a mapping with a distinct name.
func named(list []any) bool {
	seen := map[string]bool{}
	for _, item := range list {
		n := nameOf(item)
		if n == "" || seen[n] {
			return false
		}
		seen[n] = true
	}
	return true
}

func nameOf(item any) string {
	m, ok := item.(map[string]any)
	if !ok {
		return ""
	}
	n, _ := m["name"].(string)
	return n
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// secret stands for an HMAC key's value, which a diff never prints.
const secret = `"(secret)"`

// isSecretPath reports whether path is a JWK's k: an HMAC key.
func isSecretPath(path string) bool {
	return path == "k" || len(path) > 2 && path[len(path)-2:] == ".k"
}

// redact replaces every JWK's k inside v.
func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if k == "k" {
				out[k] = "(secret)"
				continue
			}
			if k == "sha256" {
				out[k] = hashPrefixOf(x)
				continue
			}
			out[k] = redact(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = redact(x)
		}
		return out
	}
	return v
}

func renderAt(path string, v any) string {
	switch {
	case isSecretPath(path):
		return secret
	case isHashPath(path):
		return render(hashPrefixOf(v))
	}
	return render(v)
}

// isHashPath reports whether path is an API key's hash, which a diff
// shows as its prefix only, as `dpctl keys` does: against a guessable
// key, the whole hash is as good as the key.
func isHashPath(path string) bool {
	return len(path) > 7 && path[len(path)-7:] == ".sha256"
}

func hashPrefixOf(v any) any {
	if h, ok := v.(string); ok {
		return short12(h) + "…"
	}
	return v
}

// render is a value as one line of JSON, secrets redacted, cut at
// maxDiffValue.
func render(v any) string {
	js, err := json.Marshal(redact(v))
	if err != nil {
		return fmt.Sprint(v)
	}
	s := string(js)
	if len(s) > maxDiffValue {
		s = s[:maxDiffValue] + "…"
	}
	return s
}

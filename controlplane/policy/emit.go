package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// jsonToYAML turns a JSON document into block-style YAML 1.2 that Decode
// reads back as the same document, keeping the order of keys. It is the
// last step of every admin API apply (the policy file is written before
// the policy is served), so it must be quick: a generic converter took
// 250-400 ms for a policy of 10,000 routes, this takes a few.
//
// Strings are written plain only when nothing in YAML could read them as
// another type or as syntax; every other string is double-quoted with
// escapes for everything outside printable text.
func jsonToYAML(js []byte) ([]byte, error) {
	sc := &jsonScanner{data: js}
	root, err := sc.value(0)
	if err != nil {
		return nil, err
	}
	if sc.skipSpace(); sc.pos != len(sc.data) {
		return nil, errors.New("trailing data after the JSON document")
	}
	var b bytes.Buffer
	b.Grow(len(js))
	switch {
	case root.kind == '{' && len(root.keys) > 0:
		writeMapping(&b, root, 0, "")
	case root.kind == '[' && len(root.items) > 0:
		writeSequence(&b, root, 0)
	default:
		writeScalarLine(&b, root)
	}
	return b.Bytes(), nil
}

// jnode is one JSON value; objects keep their keys in order.
type jnode struct {
	kind   byte   // '{', '[', or 's' for a scalar
	scalar string // the scalar as YAML writes it
	keys   []string
	vals   []*jnode
	items  []*jnode
}

// jsonScanner reads the JSON protojson writes (a generic decoder's tokens
// cost most of the conversion). Strings with escapes are handed to
// encoding/json; everything else is sliced from the input.
type jsonScanner struct {
	data []byte
	pos  int
}

// maxJSONDepth bounds recursion; a policy nests a few levels.
const maxJSONDepth = 64

func (s *jsonScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *jsonScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("JSON at byte %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *jsonScanner) value(depth int) (*jnode, error) {
	if depth > maxJSONDepth {
		return nil, s.errorf("nested more than %d deep", maxJSONDepth)
	}
	s.skipSpace()
	if s.pos >= len(s.data) {
		return nil, s.errorf("unexpected end")
	}
	switch c := s.data[s.pos]; c {
	case '{':
		s.pos++
		n := &jnode{kind: '{'}
		for first := true; ; first = false {
			s.skipSpace()
			if s.pos < len(s.data) && s.data[s.pos] == '}' {
				s.pos++
				return n, nil
			}
			if !first {
				if err := s.expect(','); err != nil {
					return nil, err
				}
				s.skipSpace()
			}
			k, err := s.str()
			if err != nil {
				return nil, err
			}
			s.skipSpace()
			if err := s.expect(':'); err != nil {
				return nil, err
			}
			v, err := s.value(depth + 1)
			if err != nil {
				return nil, err
			}
			n.keys, n.vals = append(n.keys, yamlString(k)), append(n.vals, v)
		}
	case '[':
		s.pos++
		n := &jnode{kind: '['}
		for first := true; ; first = false {
			s.skipSpace()
			if s.pos < len(s.data) && s.data[s.pos] == ']' {
				s.pos++
				return n, nil
			}
			if !first {
				if err := s.expect(','); err != nil {
					return nil, err
				}
			}
			v, err := s.value(depth + 1)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, v)
		}
	case '"':
		str, err := s.str()
		if err != nil {
			return nil, err
		}
		return &jnode{kind: 's', scalar: yamlString(str)}, nil
	default:
		// A number, true, false or null: YAML reads each literally.
		start := s.pos
		for s.pos < len(s.data) && strings.IndexByte(",]} \t\n\r", s.data[s.pos]) < 0 {
			s.pos++
		}
		lit := string(s.data[start:s.pos])
		if !json.Valid([]byte(lit)) {
			return nil, s.errorf("bad literal %q", lit)
		}
		return &jnode{kind: 's', scalar: lit}, nil
	}
}

func (s *jsonScanner) expect(c byte) error {
	if s.pos >= len(s.data) || s.data[s.pos] != c {
		return s.errorf("want %q", c)
	}
	s.pos++
	return nil
}

// str reads a JSON string.
func (s *jsonScanner) str() (string, error) {
	if err := s.expect('"'); err != nil {
		return "", err
	}
	start, escaped := s.pos, false
	for ; s.pos < len(s.data); s.pos++ {
		switch s.data[s.pos] {
		case '\\':
			escaped = true
			s.pos++
		case '"':
			raw := s.data[start:s.pos]
			s.pos++
			if !escaped {
				return string(raw), nil
			}
			var out string
			if err := json.Unmarshal(s.data[start-1:s.pos], &out); err != nil {
				return "", s.errorf("%v", err)
			}
			return out, nil
		}
	}
	return "", s.errorf("unterminated string")
}

// empty reports whether n is written on its key's line: a scalar, {} or [].
func (n *jnode) inline() (string, bool) {
	switch {
	case n.kind == 's':
		return n.scalar, true
	case n.kind == '{' && len(n.keys) == 0:
		return "{}", true
	case n.kind == '[' && len(n.items) == 0:
		return "[]", true
	}
	return "", false
}

func writeScalarLine(b *bytes.Buffer, n *jnode) {
	s, ok := n.inline()
	if !ok {
		s = flow(n)
	}
	b.WriteString(s)
	b.WriteByte('\n')
}

// writeMapping writes n's keys at indent; first, when set, replaces the
// indentation of the first line (a sequence item's "- ").
func writeMapping(b *bytes.Buffer, n *jnode, indent int, first string) {
	for i, k := range n.keys {
		if i == 0 && first != "" {
			b.WriteString(first)
		} else {
			writeIndent(b, indent)
		}
		b.WriteString(k)
		b.WriteByte(':')
		v := n.vals[i]
		if s, ok := v.inline(); ok {
			b.WriteByte(' ')
			b.WriteString(s)
			b.WriteByte('\n')
			continue
		}
		b.WriteByte('\n')
		if v.kind == '{' {
			writeMapping(b, v, indent+2, "")
		} else {
			writeSequence(b, v, indent)
		}
	}
}

// writeSequence writes n's items at indent, each after "- ".
func writeSequence(b *bytes.Buffer, n *jnode, indent int) {
	for _, item := range n.items {
		prefix := strings.Repeat(" ", indent) + "- "
		if s, ok := item.inline(); ok {
			b.WriteString(prefix)
			b.WriteString(s)
			b.WriteByte('\n')
			continue
		}
		if item.kind == '{' {
			writeMapping(b, item, indent+2, prefix)
			continue
		}
		// A sequence in a sequence (the policy has none) goes in flow style.
		b.WriteString(prefix)
		b.WriteString(flow(item))
		b.WriteByte('\n')
	}
}

// flow writes n in YAML's flow style.
func flow(n *jnode) string {
	if s, ok := n.inline(); ok {
		return s
	}
	var parts []string
	if n.kind == '{' {
		for i, k := range n.keys {
			parts = append(parts, k+": "+flow(n.vals[i]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	for _, it := range n.items {
		parts = append(parts, flow(it))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func writeIndent(b *bytes.Buffer, n int) {
	for range n {
		b.WriteByte(' ')
	}
}

// yamlString writes s plain when that is certainly read back as the same
// string, and double-quoted otherwise.
func yamlString(s string) string {
	if plainSafe(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r >= 0xa0 && r != 0xfeff && r != utf8.RuneError && unicode.IsPrint(r):
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// plainSafe is deliberately narrow: a letter or slash first, then letters,
// digits and _ . / - only, and none of the words YAML resolves to
// booleans or null (in any version, so that no reader is surprised).
func plainSafe(s string) bool {
	if s == "" {
		return false
	}
	c := s[0]
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '/') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '/' || c == '-') {
			return false
		}
	}
	switch strings.ToLower(s) {
	case "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return false
	}
	return true
}

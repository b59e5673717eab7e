package auth

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// parseObject decodes a JWS header or a JWT claims set: one JSON object
// (RFC 8259) whose members are each named once, into the values
// encoding/json's Unmarshal into a map[string]any gives (string, float64,
// bool, nil, []any, map[string]any), with the same refusals and the same
// replacement of invalid UTF-8. It exists for speed: on the cold path of a
// handshake, encoding/json's decoder spent 85% of the check (natively; in
// a Wasm VM more), most of it building error messages for the look-ahead
// past the object. FuzzParseObject holds the two equal.
func parseObject(raw []byte) (map[string]any, bool) {
	d := jsonDecoder{data: raw}
	d.space()
	if d.peek() != '{' {
		return nil, false
	}
	v, ok := d.object(true, 0)
	if !ok {
		return nil, false
	}
	d.space()
	if d.pos != len(d.data) {
		return nil, false
	}
	return v, true
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

type jsonDecoder struct {
	data []byte
	pos  int
}

func (d *jsonDecoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

func (d *jsonDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// object decodes an object at d.pos ('{'). Only the top level refuses a
// member named twice; below it the last one wins, as in encoding/json.
func (d *jsonDecoder) object(unique bool, depth int) (map[string]any, bool) {
	if depth++; depth > maxJSONDepth {
		return nil, false
	}
	d.pos++ // '{'
	m := map[string]any{}
	d.space()
	if d.peek() == '}' {
		d.pos++
		return m, true
	}
	for {
		d.space()
		if d.peek() != '"' {
			return nil, false
		}
		name, ok := d.string()
		if !ok {
			return nil, false
		}
		d.space()
		if d.peek() != ':' {
			return nil, false
		}
		d.pos++
		d.space()
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		if _, dup := m[name]; dup && unique {
			return nil, false
		}
		m[name] = v
		d.space()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return m, true
		default:
			return nil, false
		}
	}
}

func (d *jsonDecoder) array(depth int) ([]any, bool) {
	if depth++; depth > maxJSONDepth {
		return nil, false
	}
	d.pos++ // '['
	a := []any{}
	d.space()
	if d.peek() == ']' {
		d.pos++
		return a, true
	}
	for {
		d.space()
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		d.space()
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return a, true
		default:
			return nil, false
		}
	}
}

func (d *jsonDecoder) value(depth int) (any, bool) {
	switch c := d.peek(); {
	case c == '{':
		return d.object(false, depth)
	case c == '[':
		return d.array(depth)
	case c == '"':
		return d.string()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return d.number()
	}
	return nil, false
}

func (d *jsonDecoder) literal(word string) bool {
	if len(d.data)-d.pos < len(word) || string(d.data[d.pos:d.pos+len(word)]) != word {
		return false
	}
	d.pos += len(word)
	return true
}

// number scans RFC 8259's grammar and converts as encoding/json does: a
// number out of float64's range is an error, not an infinity.
func (d *jsonDecoder) number() (any, bool) {
	start := d.pos
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && '0' <= d.data[d.pos] && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.peek() == '-' {
		d.pos++
	}
	switch {
	case d.peek() == '0':
		d.pos++
	case digits() == 0:
		return nil, false
	}
	if d.peek() == '.' {
		d.pos++
		if digits() == 0 {
			return nil, false
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.pos++
		if c := d.peek(); c == '+' || c == '-' {
			d.pos++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	f, err := strconv.ParseFloat(string(d.data[start:d.pos]), 64)
	if err != nil {
		return nil, false
	}
	return f, true
}

// string decodes a string at d.pos ('"'). Like encoding/json, it refuses
// control characters and bad escapes, and turns invalid UTF-8 and lone
// surrogates into U+FFFD.
func (d *jsonDecoder) string() (string, bool) {
	d.pos++ // '"'
	start := d.pos
	// The common case: no escape and valid UTF-8, one allocation.
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c == '"' {
			s := string(d.data[start:d.pos])
			d.pos++
			return s, true
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		d.pos++
	}
	buf := append([]byte(nil), d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			return string(buf), true
		case c < 0x20:
			return "", false
		case c == '\\':
			d.pos++
			if d.pos >= len(d.data) {
				return "", false
			}
			e := d.data[d.pos]
			d.pos++
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return "", false
				}
				if utf16.IsSurrogate(r) {
					// A pair decodes to one rune; anything else is U+FFFD
					// and the next escape is read on its own.
					if len(d.data)-d.pos >= 6 && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
						save := d.pos
						d.pos += 2
						r2, ok := d.hex4()
						if !ok {
							return "", false
						}
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							buf = utf8.AppendRune(buf, dec)
							continue
						}
						d.pos = save
					}
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return "", false
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
			} else {
				buf = append(buf, d.data[d.pos:d.pos+size]...)
			}
			d.pos += size
		}
	}
	return "", false
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if len(d.data)-d.pos < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.pos : d.pos+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.pos += 4
	return r, true
}

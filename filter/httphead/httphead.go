// Package httphead reads and rewrites the head of an HTTP/1.1 request from
// raw bytes: what a network filter sees of a WebSocket handshake before the
// connection becomes a pipe.
//
// It is deliberately strict. The bytes it passes on are read again by the
// back end, so any input two parsers could read differently (bare LF, a
// folded line, space before a colon, control bytes) is refused rather than
// guessed at: a check must never approve one reading of a request while
// the back end acts on another.
package httphead

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/directpipe/directpipe/filter/contract"
)

var (
	// ErrIncomplete means the bytes so far are a valid start of a head
	// that has not ended yet: wait for more.
	ErrIncomplete = errors.New("httphead: incomplete request head")
	// ErrTooLarge means no head ended within contract.MaxHeadBytes.
	ErrTooLarge = errors.New("httphead: request head too large")
)

// Field is one header line, its name as the client spelled it.
type Field struct {
	Name, Value string
}

// Head is a parsed request head.
type Head struct {
	Method, Target, Proto string
	Fields                []Field
}

// Parse reads the request head at the start of buf and returns it with its
// length in bytes, the blank line included. Bytes after the head are not
// looked at.
func Parse(buf []byte) (*Head, int, error) {
	end := bytes.Index(buf[:min(len(buf), contract.MaxHeadBytes)], []byte("\r\n\r\n"))
	if end < 0 {
		if len(buf) >= contract.MaxHeadBytes {
			return nil, 0, ErrTooLarge
		}
		// Refuse garbage now rather than after contract.MaxHeadBytes or a timeout:
		// every complete line so far must already be valid.
		if err := checkPrefix(buf); err != nil {
			return nil, 0, err
		}
		return nil, 0, ErrIncomplete
	}
	lines := strings.Split(string(buf[:end]), "\r\n")
	h, err := parseRequestLine(lines[0])
	if err != nil {
		return nil, 0, err
	}
	for i, line := range lines[1:] {
		f, err := parseField(line)
		if err != nil {
			return nil, 0, fmt.Errorf("httphead: header line %d: %w", i+1, err)
		}
		h.Fields = append(h.Fields, f)
	}
	return h, end + 4, nil
}

// Scanner reads a head that arrives in pieces: each call to Scan has the
// bytes so far, a buffer that only grows. It looks at each byte a bounded
// number of times, so a head sent a byte at a time costs about what it
// costs sent at once; calling Parse on every piece would cost the square
// of its length, which a client trickling heads on many connections could
// turn into a worker's whole CPU. Its zero value is ready to use.
type Scanner struct {
	line     int // where the line being received starts; every line before it is valid
	seen     int // bytes looked at so far
	examined int // bytes searched, over every call
}

// Scan reads buf as Parse does, with the same results, looking only at the
// bytes that earlier calls did not.
func (s *Scanner) Scan(buf []byte) (*Head, int, error) {
	if len(buf) < s.seen {
		*s = Scanner{} // not the buffer it saw before: start again
	}
	if len(buf) > 0 && !isTokenChar(buf[0]) {
		return nil, 0, errors.New("httphead: not an HTTP request")
	}
	limit := min(len(buf), contract.MaxHeadBytes)
	for {
		// A CRLF may straddle the last call's end.
		from := max(s.line, s.seen-1)
		i := bytes.Index(buf[from:limit], crlf)
		if i < 0 {
			s.examined += limit - from
			break
		}
		end := from + i
		s.examined += i + len(crlf)
		if end == s.line {
			// The empty line: the head is whole. Reading it once more,
			// from the start, is linear.
			s.examined += end
			return Parse(buf)
		}
		line := string(buf[s.line:end])
		if s.line == 0 {
			if _, err := parseRequestLine(line); err != nil {
				return nil, 0, err
			}
		} else if _, err := parseField(line); err != nil {
			return nil, 0, fmt.Errorf("httphead: %w", err)
		}
		s.line = end + len(crlf)
		s.seen = s.line
	}
	// The line still being received may hold only what a line may hold.
	if bytes.ContainsAny(buf[max(s.line, s.seen):limit], "\n\x00") {
		return nil, 0, errors.New("httphead: bare LF or NUL")
	}
	s.seen = limit
	if len(buf) >= contract.MaxHeadBytes {
		return nil, 0, ErrTooLarge
	}
	return nil, 0, ErrIncomplete
}

var crlf = []byte("\r\n")

// checkPrefix validates the complete lines of an unfinished head.
func checkPrefix(buf []byte) error {
	if len(buf) > 0 && !isTokenChar(buf[0]) {
		return errors.New("httphead: not an HTTP request")
	}
	lines := strings.Split(string(buf), "\r\n")
	// The last element is a line still being received; it may hold only
	// what a line may hold.
	last := lines[len(lines)-1]
	if strings.ContainsAny(last, "\n\x00") {
		return errors.New("httphead: bare LF or NUL")
	}
	lines = lines[:len(lines)-1]
	if len(lines) == 0 {
		return nil
	}
	if _, err := parseRequestLine(lines[0]); err != nil {
		return err
	}
	for _, line := range lines[1:] {
		if _, err := parseField(line); err != nil {
			return fmt.Errorf("httphead: %w", err)
		}
	}
	return nil
}

func parseRequestLine(line string) (*Head, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	switch {
	case !ok1 || !ok2:
		return nil, errors.New("httphead: malformed request line")
	case !isToken(method):
		return nil, errors.New("httphead: malformed method")
	case target == "" || strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		return nil, errors.New("httphead: malformed request target")
	case proto != "HTTP/1.1":
		// A WebSocket handshake is HTTP/1.1 (RFC 6455 §4.1).
		return nil, errors.New("httphead: not HTTP/1.1")
	}
	return &Head{Method: method, Target: target, Proto: proto}, nil
}

func parseField(line string) (Field, error) {
	name, value, ok := strings.Cut(line, ":")
	switch {
	case line == "":
		return Field{}, errors.New("empty line")
	case line[0] == ' ' || line[0] == '\t':
		return Field{}, errors.New("folded line (obs-fold)")
	case !ok:
		return Field{}, errors.New("no colon")
	case !isToken(name):
		// Also catches space before the colon (RFC 9112 §5.1).
		return Field{}, errors.New("malformed field name")
	}
	value = strings.Trim(value, " \t")
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return Field{}, fmt.Errorf("control byte in field %q", name)
		}
	}
	return Field{Name: name, Value: value}, nil
}

// Values returns every value of a header, name matched without case.
func (h *Head) Values(name string) []string {
	var out []string
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Get returns a header's value and whether it is present. Repeated lines
// are combined with ", " (RFC 9110 §5.3).
func (h *Head) Get(name string) (string, bool) {
	vs := h.Values(name)
	return strings.Join(vs, ", "), len(vs) > 0
}

// Del removes every line of a header.
func (h *Head) Del(name string) {
	h.Fields = slices.DeleteFunc(h.Fields, func(f Field) bool { return strings.EqualFold(f.Name, name) })
}

// Set gives a header one value: in place of its first line if it had
// one, at the end otherwise.
func (h *Head) Set(name, value string) {
	for i, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			h.Fields[i].Value = value
			rest := slices.DeleteFunc(h.Fields[i+1:], func(f Field) bool { return strings.EqualFold(f.Name, name) })
			h.Fields = h.Fields[:i+1+len(rest)]
			return
		}
	}
	h.Fields = append(h.Fields, Field{Name: name, Value: value})
}

// Bytes serialises the head, blank line included.
func (h *Head) Bytes() []byte {
	var b bytes.Buffer
	b.WriteString(h.Method + " " + h.Target + " " + h.Proto + "\r\n")
	for _, f := range h.Fields {
		b.WriteString(f.Name + ": " + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// HasToken reports whether a comma-separated header holds token, without
// case (Connection: keep-alive, Upgrade).
func (h *Head) HasToken(name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// isTokenChar is RFC 9110's tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

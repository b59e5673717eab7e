// Package docs holds directpipe's user documentation and the code that keeps
// it true: the policy reference is generated from the policy schema's
// comments, and a test checks every page against the repository (see
// docs_test.go).
package docs

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Message is one protobuf message of the schema, with its leading comment.
type Message struct {
	Name    string
	Comment []string // comment lines, without "//"
	Fields  []Field
}

// Field is one field of a message.
type Field struct {
	Name     string
	Type     string // the proto type: string, uint32, a message name, ...
	Repeated bool
	MapKey   string // set for map<MapKey, Type>
	OneOf    string // the oneof the field belongs to, if any
	Comment  []string
}

var (
	messageRe = regexp.MustCompile(`^message\s+(\w+)\s*\{$`)
	emptyRe   = regexp.MustCompile(`^message\s+(\w+)\s*\{\s*\}$`)
	oneofRe   = regexp.MustCompile(`^oneof\s+(\w+)\s*\{$`)
	fieldRe   = regexp.MustCompile(`^(repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+\s*;$`)
	mapRe     = regexp.MustCompile(`^map<\s*(\w+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*\d+\s*;$`)
)

// maxProto bounds the schema the parser reads; the real one is ~15 KB.
const maxProto = 1 << 20

// ParseProto reads the messages of a proto3 file of the shape the policy
// schema has: top-level messages, scalar, message, repeated and map fields,
// oneofs, and // comments. Anything else is an error, so a schema that
// outgrows this parser fails the reference's test instead of vanishing
// from the reference.
func ParseProto(src []byte) ([]Message, error) {
	if len(src) > maxProto {
		return nil, fmt.Errorf("proto file is %d bytes, more than %d", len(src), maxProto)
	}
	var (
		msgs    []Message
		cur     *Message
		oneof   string
		comment []string
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if c, ok := strings.CutPrefix(line, "//"); ok {
			comment = append(comment, strings.TrimSpace(c))
			continue
		}
		// A trailing comment on a field line documents the field too.
		if code, c, ok := strings.Cut(line, "//"); ok {
			line = strings.TrimSpace(code)
			comment = append(comment, strings.TrimSpace(c))
		}
		switch {
		case line == "":
			if cur == nil {
				comment = nil // the file's own comment, or a detached one
			}
			continue
		case cur == nil && (strings.HasPrefix(line, "syntax") || strings.HasPrefix(line, "package") ||
			strings.HasPrefix(line, "import") || strings.HasPrefix(line, "option")):
		case cur == nil && emptyRe.MatchString(line):
			msgs = append(msgs, Message{Name: emptyRe.FindStringSubmatch(line)[1], Comment: comment})
		case cur == nil && messageRe.MatchString(line):
			msgs = append(msgs, Message{Name: messageRe.FindStringSubmatch(line)[1], Comment: comment})
			cur = &msgs[len(msgs)-1]
		case cur != nil && oneof == "" && oneofRe.MatchString(line):
			oneof = oneofRe.FindStringSubmatch(line)[1]
		case cur != nil && line == "}":
			if oneof != "" {
				oneof = ""
			} else {
				cur = nil
			}
		case cur != nil && mapRe.MatchString(line):
			m := mapRe.FindStringSubmatch(line)
			cur.Fields = append(cur.Fields, Field{Name: m[3], Type: m[2], MapKey: m[1], OneOf: oneof, Comment: comment})
		case cur != nil && fieldRe.MatchString(line):
			m := fieldRe.FindStringSubmatch(line)
			cur.Fields = append(cur.Fields, Field{Name: m[3], Type: m[2], Repeated: m[1] != "", OneOf: oneof, Comment: comment})
		default:
			return nil, fmt.Errorf("line %d: the reference generator does not read %q", n, line)
		}
		comment = nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("message %s is not closed", cur.Name)
	}
	return msgs, nil
}

// PolicyReference renders the policy schema as a Markdown reference: one
// section per message, in the schema's order, one table row per field.
// schemaPath is the schema's path from the repository root, for the header.
func PolicyReference(src []byte, schemaPath string) ([]byte, error) {
	msgs, err := ParseProto(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", schemaPath, err)
	}
	known := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		known[m.Name] = true
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Policy reference

<!-- Generated from %s by "go test ./docs -run TestPolicyReference -update"
     (also run by "make generate"). Do not edit: change the schema's comments. -->

A policy is one YAML file (or one admin API call) holding listeners,
routes, back ends and auth policies. The YAML is the protobuf JSON form of
the schema in [%s](../%s): field names as below, durations as strings
with a unit (%s, %s, %s), enumerations as lower-case strings. Loading is
strict: an unknown field or a wrong type is an error naming the field and
its line. The [policy guide](policy.md) shows a whole policy and what
each part becomes in Envoy.

`, schemaPath, schemaPath, schemaPath, "`30s`", "`5m`", "`1h`")
	for _, m := range msgs {
		fmt.Fprintf(&b, "## %s\n\n", m.Name)
		if p := paragraphs(m.Comment); p != "" {
			b.WriteString(p + "\n\n")
		}
		if len(m.Fields) == 0 {
			continue
		}
		b.WriteString("| field | type | meaning |\n|---|---|---|\n")
		for _, f := range m.Fields {
			desc := strings.Join(strings.Fields(strings.Join(f.Comment, " ")), " ")
			if f.OneOf != "" {
				desc = strings.TrimSpace(fmt.Sprintf("One of `%s`: set exactly one. %s", f.OneOf, desc))
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Name, typeName(f, known), cell(desc))
		}
		b.WriteString("\n")
	}
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n'), nil
}

// paragraphs joins comment lines into Markdown paragraphs; an empty comment
// line separates two.
func paragraphs(lines []string) string {
	var out []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			out = append(out, text(strings.Join(cur, " ")))
			cur = nil
		}
	}
	for _, l := range lines {
		if l == "" {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return strings.Join(out, "\n\n")
}

// cell makes text safe inside a Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(text(s), "|", `\|`)
}

// text keeps a comment's <placeholder> from reading as an HTML tag.
func text(s string) string {
	return strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(s)
}

func typeName(f Field, known map[string]bool) string {
	t := scalar(f.Type, known)
	switch {
	case f.MapKey != "":
		return fmt.Sprintf("map of %s to %s", scalar(f.MapKey, known), t)
	case f.Repeated:
		return "list of " + t
	}
	return t
}

func scalar(t string, known map[string]bool) string {
	switch t {
	case "string":
		return "string"
	case "bool":
		return "bool"
	case "uint32", "uint64":
		return "integer ≥ 0"
	case "int32", "int64":
		return "integer"
	case "google.protobuf.Duration":
		return "duration"
	}
	if known[t] {
		return fmt.Sprintf("[%s](#%s)", t, strings.ToLower(t))
	}
	return "`" + t + "`"
}

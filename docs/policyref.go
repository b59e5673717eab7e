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

// Message is one protobuf message or enum of the schema, with its leading
// comment. A nested one is named Parent.Child.
type Message struct {
	Name    string
	Comment []string // comment lines, without "//"
	Fields  []Field
	Enum    bool // an enum: Fields are its values, with no type
}

// Field is one field of a message, or one value of an enum.
type Field struct {
	Name     string
	Type     string // the proto type: string, uint32, a message name, ...
	Repeated bool
	MapKey   string // set for map<MapKey, Type>
	OneOf    string // the oneof the field belongs to, if any
	Comment  []string
}

var (
	blockRe = regexp.MustCompile(`^(message|enum|oneof)\s+(\w+)\s*\{\s*(\})?$`)
	fieldRe = regexp.MustCompile(`^(?:(repeated|optional)\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+\s*(?:\[[^\]]*\])?\s*;$`)
	mapRe   = regexp.MustCompile(`^map<\s*(\w+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*\d+\s*(?:\[[^\]]*\])?\s*;$`)
	valueRe = regexp.MustCompile(`^(\w+)\s*=\s*-?\d+\s*(?:\[[^\]]*\])?\s*;$`)
)

// maxProto bounds the schema the parser reads; the real one is ~15 KB.
const maxProto = 1 << 20

// ParseProto reads the messages and enums of a proto3 file: nested ones
// too, scalar, message, repeated, optional and map fields, oneofs, and //
// comments; reserved and option lines are skipped. Anything else is an
// error, so a schema that outgrows this parser fails the reference's test
// instead of vanishing from the reference.
func ParseProto(src []byte) ([]Message, error) {
	if len(src) > maxProto {
		return nil, fmt.Errorf("proto file is %d bytes, more than %d", len(src), maxProto)
	}
	var (
		msgs    []Message
		stack   []block
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
		var top *block
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		switch {
		case line == "":
			if top == nil {
				comment = nil // the file's own comment, or a detached one
			}
			continue
		case top == nil && (strings.HasPrefix(line, "syntax ") || strings.HasPrefix(line, "package ") ||
			strings.HasPrefix(line, "import ")):
		case strings.HasPrefix(line, "option ") || strings.HasPrefix(line, "reserved "):
		case blockRe.MatchString(line):
			m := blockRe.FindStringSubmatch(line)
			kind, name, closed := m[1], m[2], m[3] != ""
			if kind == "oneof" {
				if top == nil || top.kind != "message" {
					return nil, fmt.Errorf("line %d: oneof %s outside a message", n, name)
				}
				stack = append(stack, block{kind: kind, name: name, msg: top.msg})
				break
			}
			if top != nil && top.kind != "message" {
				return nil, fmt.Errorf("line %d: %s %s inside a %s", n, kind, name, top.kind)
			}
			if top != nil {
				name = top.name + "." + name
			}
			msgs = append(msgs, Message{Name: name, Comment: comment, Enum: kind == "enum"})
			if !closed {
				stack = append(stack, block{kind: kind, name: name, msg: len(msgs) - 1})
			}
		case top != nil && line == "}":
			stack = stack[:len(stack)-1]
		case top != nil && top.kind == "enum" && valueRe.MatchString(line):
			m := valueRe.FindStringSubmatch(line)
			msgs[top.msg].Fields = append(msgs[top.msg].Fields, Field{Name: m[1], Comment: comment})
		case top != nil && top.kind != "enum" && mapRe.MatchString(line):
			m := mapRe.FindStringSubmatch(line)
			msgs[top.msg].Fields = append(msgs[top.msg].Fields, Field{Name: m[3], Type: m[2], MapKey: m[1], OneOf: top.oneof(), Comment: comment})
		case top != nil && top.kind != "enum" && fieldRe.MatchString(line):
			m := fieldRe.FindStringSubmatch(line)
			msgs[top.msg].Fields = append(msgs[top.msg].Fields, Field{Name: m[3], Type: m[2], Repeated: m[1] == "repeated", OneOf: top.oneof(), Comment: comment})
		default:
			return nil, fmt.Errorf("line %d: the reference generator does not read %q", n, line)
		}
		comment = nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("%s %s is not closed", stack[len(stack)-1].kind, stack[len(stack)-1].name)
	}
	return msgs, nil
}

// block is an open message, enum or oneof while the parser reads it.
type block struct {
	kind string // message, enum or oneof
	name string // the oneof's name, or the message's or enum's full name
	msg  int    // index of the message (or enum) its lines belong to
}

// oneof names the oneof the block is, if it is one.
func (b *block) oneof() string {
	if b.kind == "oneof" {
		return b.name
	}
	return ""
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
		if m.Enum {
			b.WriteString("| value | meaning |\n|---|---|\n")
			for _, f := range m.Fields {
				desc := strings.Join(strings.Fields(strings.Join(f.Comment, " ")), " ")
				fmt.Fprintf(&b, "| `%s` | %s |\n", f.Name, cell(desc))
			}
			b.WriteString("\n")
			continue
		}
		b.WriteString("| field | type | meaning |\n|---|---|---|\n")
		for _, f := range m.Fields {
			desc := strings.Join(strings.Fields(strings.Join(f.Comment, " ")), " ")
			if f.OneOf != "" {
				desc = strings.TrimSpace(fmt.Sprintf("One of `%s`: set exactly one. %s", f.OneOf, desc))
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Name, typeName(f, m.Name, known), cell(desc))
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

func typeName(f Field, scope string, known map[string]bool) string {
	t := scalar(resolve(f.Type, scope, known), known)
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
		// GitHub's anchor of a heading "Parent.Child" drops the dot.
		return fmt.Sprintf("[%s](#%s)", t, strings.ToLower(strings.ReplaceAll(t, ".", "")))
	}
	return "`" + t + "`"
}

// resolve finds the message a type name means from inside message scope,
// as protoc does: the innermost enclosing scope that has it.
func resolve(t, scope string, known map[string]bool) string {
	for s := scope; s != ""; {
		if known[s+"."+t] {
			return s + "." + t
		}
		i := strings.LastIndex(s, ".")
		if i < 0 {
			break
		}
		s = s[:i]
	}
	return t
}

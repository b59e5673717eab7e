// Package policy loads, validates and stores directpipe route policy.
//
// The schema is the protobuf in api/directpipe/policy/v1; the YAML file is a
// protojson document written as YAML. Parsing is strict: an unknown field or
// a value of the wrong type is an error that names the field path and line.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// MaxPolicyBytes bounds the size of a policy document so that a runaway file
// or API request cannot exhaust the control plane's memory.
const MaxPolicyBytes = 16 << 20

// LoadFile reads, parses and validates the policy file at path.
func LoadFile(path string) (*policyv1.Policy, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ReadFile reads a policy file of at most MaxPolicyBytes: a path that
// names a device or a runaway file is refused before it fills memory.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if len(data) > MaxPolicyBytes {
		return nil, fmt.Errorf("read policy: %s is more than the %d bytes allowed", path, MaxPolicyBytes)
	}
	return data, nil
}

// Parse decodes a YAML (or JSON) policy strictly and validates it.
func Parse(data []byte) (*policyv1.Policy, error) {
	p, err := Decode(data)
	if err != nil {
		return nil, err
	}
	if err := Validate(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Decode decodes a YAML (or JSON) policy strictly without validating the
// references inside it.
func Decode(data []byte) (*policyv1.Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes, more than the %d allowed", len(data), MaxPolicyBytes)
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &policyv1.Policy{}, nil
		}
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if err := refuseAliases(&root); err != nil {
		return nil, err
	}
	p := &policyv1.Policy{}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if err := checkMessage(doc, p.ProtoReflect().Descriptor(), ""); err != nil {
		return nil, err
	}
	// The JSON for protojson is built from the same YAML 1.2 tree that was
	// checked: a YAML 1.1 converter would read the JWK fields n and y as the
	// booleans false and true.
	tree, err := toJSONValue(doc)
	if err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, p); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	return p, nil
}

// refuseAliases refuses YAML aliases (and so merge keys) anywhere in the
// document. Expanding them is how a file of a few hundred bytes becomes
// gigabytes ("billion laughs"), and a policy has no need for them: every
// value is written where it is used. Anchors alone are harmless and left
// alone. The walk is linear: aliases are never followed.
func refuseAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		return fmt.Errorf("parse policy: line %d: YAML aliases (*%s) are not allowed in a policy; write the value out where it is used", n.Line, n.Value)
	}
	for _, c := range n.Content {
		if err := refuseAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// toJSONValue turns a YAML node into what encoding/json marshals as the
// same document: mapping keys are always strings.
func toJSONValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return map[string]any{}, nil
		}
		return toJSONValue(n.Content[0])
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := toJSONValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := toJSONValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	if n.Tag == "!!str" {
		return n.Value, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	return v, nil
}

// checkMessage walks a YAML node against a message descriptor so that errors
// carry the field path and line, which protojson alone does not give.
func checkMessage(n *yaml.Node, md protoreflect.MessageDescriptor, path string) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return typeError(n, path, "a mapping")
	}
	if md.FullName() == "google.protobuf.Duration" {
		return typeError(n, path, `a duration string such as "30s"`)
	}
	fields := md.Fields()
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fd := fields.ByJSONName(k.Value)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k.Value))
		}
		fp := join(path, k.Value)
		if fd == nil {
			return fmt.Errorf("%s: unknown field (line %d)", fp, k.Line)
		}
		if seen[string(fd.Name())] {
			return fmt.Errorf("%s: set twice (line %d)", fp, k.Line)
		}
		seen[string(fd.Name())] = true
		if err := checkField(v, fd, fp); err != nil {
			return err
		}
	}
	return nil
}

func checkField(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) error {
	if isNull(n) {
		return nil
	}
	switch {
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			return typeError(n, path, "a mapping")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkValue(n.Content[i+1], fd.MapValue(), path+"."+n.Content[i].Value); err != nil {
				return err
			}
		}
		return nil
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			return typeError(n, path, "a list")
		}
		for i, item := range n.Content {
			if err := checkValue(item, fd, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	return checkValue(n, fd, path)
}

// checkValue checks one singular value of the field's kind.
func checkValue(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName() == "google.protobuf.Duration" {
			if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
				return typeError(n, path, `a duration string such as "30s"`)
			}
			return nil
		}
		return checkMessage(n, fd.Message(), path)
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.EnumKind:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			return typeError(n, path, "a string")
		}
	case protoreflect.BoolKind:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return typeError(n, path, "true or false")
		}
	default: // numbers
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return typeError(n, path, "a number")
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func typeError(n *yaml.Node, path, want string) error {
	got := map[yaml.Kind]string{
		yaml.MappingNode:  "a mapping",
		yaml.SequenceNode: "a list",
		yaml.ScalarNode:   fmt.Sprintf("%q", n.Value),
		yaml.AliasNode:    "an alias",
	}[n.Kind]
	if path == "" {
		path = "policy"
	}
	return fmt.Errorf("%s: want %s, got %s (line %d)", path, want, got, n.Line)
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// Marshal renders a policy as YAML with the field names of the file format.
func Marshal(p *policyv1.Policy) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("marshal policy: %w", err)
	}
	out, err := jsonToYAML(js)
	if err != nil {
		return nil, fmt.Errorf("marshal policy: %w", err)
	}
	return out, nil
}

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
	"math"
	"os"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// MaxPolicyBytes bounds a policy document before it is parsed. Parsing
// takes about 50 bytes of heap for each byte of YAML (the YAML tree, the
// JSON built from it and the message), so this bound, not the route
// bound checked after parsing, is what keeps a runaway file or apply from
// taking the control plane's memory: 100,000 routes in 8 MB of YAML once
// took it to about 400 MiB before they were refused. It is sized from
// the route bound: MaxRoutes routes and as many back ends in block style,
// about 400 bytes for each route, and no more.
const MaxPolicyBytes = 4 << 20

// MaxMessageBytes bounds an admin API message that carries a policy
// (an apply, the answer to a get): the policy twice, as a message and as
// the text it was decoded from, each at most MaxPolicyBytes, and a few
// small fields. gRPC checks it before it decodes a message.
const MaxMessageBytes = 2*MaxPolicyBytes + 64<<10

// SizeError refuses a document over MaxPolicyBytes; size is its size
// when known.
func SizeError(what string, size int64) error {
	is := "is more"
	if size > 0 {
		is = fmt.Sprintf("is %d bytes, more", size)
	}
	return fmt.Errorf("%s %s than the %d bytes (%d MiB) a policy may have; a policy holds at most %d routes",
		what, is, MaxPolicyBytes, MaxPolicyBytes>>20, MaxRoutes)
}

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

// ReadFile reads a policy file of at most MaxPolicyBytes: a file known to
// be larger is refused before a byte is read, and a path that names a
// device, or a file that grows while it is read, after one byte more
// than the bound.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxPolicyBytes {
		return nil, fmt.Errorf("read policy: %w", SizeError(path, fi.Size()))
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if len(data) > MaxPolicyBytes {
		return nil, fmt.Errorf("read policy: %w", SizeError(path, 0))
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
		return nil, WithLines(err, data)
	}
	return p, nil
}

// WithLines adds to each error of err (one, or several joined) that
// starts with a field path the line where data sets that field, or the
// nearest enclosing field it sets. The lines are looked up only for a
// policy that failed, so a valid one costs no second walk.
func WithLines(err error, data []byte) error {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || refuseAliases(&root) != nil {
		return err
	}
	lines := map[string]int{}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	indexLines(doc, (&policyv1.Policy{}).ProtoReflect().Descriptor(), "", lines)
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		out = append(out, lineOf(e, lines))
	}
	return errors.Join(out...)
}

// lineOf annotates e, whose message starts with a field path, with the
// line of the longest prefix of that path the document sets.
func lineOf(e error, lines map[string]int) error {
	msg := e.Error()
	path, _, ok := strings.Cut(msg, ": ")
	if !ok || strings.Contains(path, " ") {
		return e
	}
	for p := path; p != ""; {
		if n, ok := lines[p]; ok {
			return fmt.Errorf("%w (line %d)", e, n)
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return e
}

// indexLines records the line of every field n sets, by its path with
// the proto field names that validation errors use.
func indexLines(n *yaml.Node, md protoreflect.MessageDescriptor, path string, lines map[string]int) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	fields := md.Fields()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fd := fields.ByJSONName(k.Value)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k.Value))
		}
		if fd == nil {
			continue
		}
		fp := join(path, string(fd.Name()))
		lines[fp] = k.Line
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			continue
		}
		if fd.IsList() {
			if v.Kind != yaml.SequenceNode {
				continue
			}
			for j, item := range v.Content {
				ip := fmt.Sprintf("%s[%d]", fp, j)
				lines[ip] = item.Line
				indexLines(item, fd.Message(), ip, lines)
			}
			continue
		}
		indexLines(v, fd.Message(), fp, lines)
	}
}

// Decode decodes a YAML (or JSON) policy strictly without validating the
// references inside it.
func Decode(data []byte) (*policyv1.Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, SizeError("policy", int64(len(data)))
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
	if err := refuseLongLists(doc); err != nil {
		return nil, err
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

// topBounds are the bounds of the policy's top-level lists, by field name.
var topBounds = map[string]int{
	"listeners":     MaxListeners,
	"routes":        MaxRoutes,
	"backends":      MaxBackends,
	"auth_policies": MaxAuthPolicies,
	"authPolicies":  MaxAuthPolicies,
}

// refuseLongLists refuses a document whose top-level lists are over their
// bounds as soon as its YAML tree is built, before the three further
// copies a decode makes of it (and the second tree WithLines would parse
// to place the error): that halves what refusing the largest document
// under MaxPolicyBytes costs. Validate checks the same bounds again, for
// policies that come from elsewhere.
func refuseLongLists(doc *yaml.Node) error {
	if doc.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		limit, ok := topBounds[k.Value]
		if ok && v.Kind == yaml.SequenceNode && len(v.Content) > limit {
			return fmt.Errorf("%s: %d entries, more than the %d allowed (line %d)", k.Value, len(v.Content), limit, k.Line)
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
			// protojson would name only a byte offset in the JSON it was
			// given: "30" or "1m" is refused here, with the line.
			if n.Kind != yaml.ScalarNode || n.Tag != "!!str" || !durationRE.MatchString(n.Value) {
				return typeError(n, path, `a duration in seconds with the unit s, such as "30s" or "0.5s"`)
			}
			return nil
		}
		return checkMessage(n, fd.Message(), path)
	case protoreflect.EnumKind:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" || fd.Enum().Values().ByName(protoreflect.Name(n.Value)) == nil {
			return typeError(n, path, "one of "+enumNames(fd.Enum()))
		}
	case protoreflect.StringKind, protoreflect.BytesKind:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			return typeError(n, path, "a string")
		}
	case protoreflect.BoolKind:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return typeError(n, path, "true or false")
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return typeError(n, path, "a number")
		}
	default: // integers: checked here, where the line is known
		if want, ok := intFits(n, fd.Kind()); !ok {
			return typeError(n, path, want)
		}
	}
	return nil
}

// intFits reports whether n is an integer the field's kind holds, and if
// not, what it wants.
func intFits(n *yaml.Node, k protoreflect.Kind) (string, bool) {
	var lo, hi = int64(math.MinInt32), uint64(math.MaxInt32)
	want := "a whole number"
	switch k {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		lo, hi, want = 0, math.MaxUint32, "a whole number from 0 to 4294967295"
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		lo, hi, want = 0, math.MaxUint64, "a whole number of 0 or more"
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		lo, hi = math.MinInt64, math.MaxInt64
	default:
		want = "a whole number from -2147483648 to 2147483647"
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return want, false
	}
	var i int64
	if err := n.Decode(&i); err == nil {
		return want, i >= lo && (i < 0 || uint64(i) <= hi)
	}
	var u uint64
	if err := n.Decode(&u); err == nil {
		return want, u <= hi
	}
	return want, false
}

// durationRE is the JSON form of google.protobuf.Duration: seconds, up to
// nine decimals, and the unit s.
var durationRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]{1,9})?s$`)

// enumNames lists an enum's values but the zero one, which a policy never
// needs to write.
func enumNames(ed protoreflect.EnumDescriptor) string {
	var names []string
	for i := range ed.Values().Len() {
		if v := ed.Values().Get(i); v.Number() != 0 {
			names = append(names, string(v.Name()))
		}
	}
	return strings.Join(names, ", ")
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

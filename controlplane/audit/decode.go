package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// typePrefix is how every Envoy type URL starts.
const typePrefix = "type.googleapis.com/"

// structURL stands in for types this binary does not know; the original
// object, its "@type" included, becomes the Struct's value.
const structURL = typePrefix + "google.protobuf.Struct"

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// decodeConfigDump reads /config_dump. Every entry decodes on its own, so a
// section this binary cannot read costs a note, not the audit. Extensions
// it has no Go type for are kept as Structs that remember their type URL.
func decodeConfigDump(b []byte) (*dump, []string, error) {
	var top struct {
		Configs []json.RawMessage `json:"configs"`
	}
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, nil, fmt.Errorf("config dump: %w", err)
	}
	if top.Configs == nil {
		return nil, nil, errors.New("config dump: no \"configs\" list: is this the output of /config_dump?")
	}
	d := &dump{}
	var notes []string
	for i, raw := range top.Configs {
		fixed, err := resolvable(raw)
		if err != nil {
			notes = append(notes, fmt.Sprintf("configs[%d] not read: %v", i, err))
			continue
		}
		var a anypb.Any
		if err := unmarshal.Unmarshal(fixed, &a); err != nil {
			notes = append(notes, fmt.Sprintf("configs[%d] not read: %v", i, err))
			continue
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			notes = append(notes, fmt.Sprintf("configs[%d] not read: %v", i, err))
			continue
		}
		switch m := m.(type) {
		case *adminv3.BootstrapConfigDump:
			d.bootstrap = m
		case *adminv3.ListenersConfigDump:
			d.listeners = m
		case *adminv3.RoutesConfigDump:
			d.routes = append(d.routes, m)
		case *adminv3.ClustersConfigDump:
			d.clusters = m
		case *adminv3.EcdsConfigDump:
			d.ecds = append(d.ecds, m)
		case *adminv3.ScopedRoutesConfigDump:
			d.scoped = m
		}
	}
	return d, notes, nil
}

// resolvable rewrites every object whose "@type" this binary cannot
// resolve into a Struct holding it, so that protojson can read the rest.
func resolvable(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(wrapUnknown(v))
}

func wrapUnknown(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if t, ok := v["@type"].(string); ok && !known(t) {
			return map[string]any{"@type": structURL, "value": v}
		}
		for k, x := range v {
			v[k] = wrapUnknown(x)
		}
	case []any:
		for i, x := range v {
			v[i] = wrapUnknown(x)
		}
	}
	return v
}

func known(typeURL string) bool {
	name := typeURL[strings.LastIndexByte(typeURL, '/')+1:]
	_, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
	return err == nil
}

// typeName is an Any's message name; for a type kept as a Struct it is
// the original one.
func typeName(a *anypb.Any) string {
	if a == nil {
		return ""
	}
	if a.GetTypeUrl() == structURL {
		var s structpb.Struct
		if a.UnmarshalTo(&s) == nil {
			if t, ok := s.GetFields()["@type"]; ok {
				return strings.TrimPrefix(t.GetStringValue(), typePrefix)
			}
		}
	}
	return strings.TrimPrefix(a.GetTypeUrl(), typePrefix)
}

// unpack decodes an Any into m when it holds m's type.
func unpack[M proto.Message](a *anypb.Any, m M) (M, bool) {
	if a == nil || typeName(a) != string(m.ProtoReflect().Descriptor().FullName()) {
		return m, false
	}
	return m, a.UnmarshalTo(m) == nil
}

func decodeServerInfo(b []byte) (*adminv3.ServerInfo, error) {
	var si adminv3.ServerInfo
	if err := unmarshal.Unmarshal(b, &si); err != nil {
		return nil, fmt.Errorf("server info: %w", err)
	}
	return &si, nil
}

// decodeStats reads /stats?format=json: counters and gauges only.
func decodeStats(b []byte) (map[string]int64, error) {
	var doc struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	out := map[string]int64{}
	for _, s := range doc.Stats {
		if v, err := strconv.ParseInt(string(s.Value), 10, 64); err == nil && s.Name != "" {
			out[s.Name] = v
		}
	}
	return out, nil
}

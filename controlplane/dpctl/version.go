package dpctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/buildinfo"
)

// version prints dpctl's build and, with server, the control plane's.
func (c *cli) version(ctx context.Context, server bool) error {
	b := buildinfo.Read()
	client := &adminv1.GetVersionResponse{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion}
	var srv *adminv1.GetVersionResponse
	var srvErr error
	if server {
		srv, srvErr = c.client.GetVersion(ctx, &adminv1.GetVersionRequest{})
	}
	if c.g.output != "table" {
		// One document: the client's, and the server's when it answered.
		doc := map[string]json.RawMessage{}
		for name, v := range map[string]*adminv1.GetVersionResponse{"client": client, "server": srv} {
			if v == nil {
				continue
			}
			js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(v)
			if err != nil {
				return err
			}
			doc[name] = js
		}
		js, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		if c.g.output == "yaml" {
			if js, err = yaml.JSONToYAML(js); err != nil {
				return err
			}
		}
		fmt.Fprintln(c.out, strings.TrimSpace(string(js)))
		return srvErr
	}
	fmt.Fprintf(c.out, "Client: %s\n", versionLine(client))
	if !server {
		return nil
	}
	if srvErr != nil {
		return srvErr
	}
	fmt.Fprintf(c.out, "Server: %s\n", versionLine(srv))
	return nil
}

func versionLine(v *adminv1.GetVersionResponse) string {
	line := v.GetVersion()
	if v.GetCommit() != "" {
		line += " commit " + v.GetCommit()
	}
	line += " " + v.GetGoVersion()
	if v.GetReplica() != "" {
		line += " replica " + v.GetReplica()
	}
	return line
}

package dpctl

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// keys prints the key sets auth policies name: a failed refresh keeps the
// last good keys serving, so this is where an operator sees one.
func (c *cli) keys(ctx context.Context) (err error) {
	resp, err := c.client.ListKeySources(ctx, &adminv1.ListKeySourcesRequest{})
	if err != nil {
		return err
	}
	pol, err := c.client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil {
		return err
	}
	keys := apiKeys(pol.GetPolicy())
	if c.g.output != "table" {
		sources, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
		if err != nil {
			return err
		}
		var doc map[string]any
		if err := json.Unmarshal(sources, &doc); err != nil {
			return err
		}
		doc["api_keys"] = keys
		return c.printDoc(doc)
	}
	defer func() {
		if err == nil {
			fmt.Fprintln(c.out)
			err = printAPIKeys(c.out, keys)
		}
	}()
	if len(resp.GetSources()) == 0 {
		fmt.Fprintln(c.out, "no auth policy names a jwks_file or jwks_url")
		return nil
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "POLICY\tKIND\tLOCATION\tKEYS\tLAST SUCCESS\tLAST ERROR")
	var notes []string
	for _, s := range resp.GetSources() {
		lastErr := "-"
		if s.GetLastError() != "" {
			lastErr = when(s.GetLastErrorAt())
			notes = append(notes, fmt.Sprintf("%s %s: last error: %s", s.GetAuthPolicy(), s.GetLocation(), s.GetLastError()))
		}
		for _, why := range s.GetSkipped() {
			notes = append(notes, fmt.Sprintf("%s %s: skipped %s", s.GetAuthPolicy(), s.GetLocation(), why))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", s.GetAuthPolicy(), s.GetKind(), s.GetLocation(), s.GetKeys(), when(s.GetLastSuccess()), lastErr)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(c.out, n)
	}
	return nil
}

// when is a timestamp as "<duration> ago", or "never".
func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "never"
	}
	return ago(t.AsTime())
}

package admin

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// serveAdmin serves an admin API with no back end behind it on loopback,
// with ServerOptions' bounds and token, and returns a client connection.
func serveAdmin(t *testing.T, token string) *grpc.ClientConn {
	t.Helper()
	srv := grpc.NewServer(ServerOptions(token, AuthOptions{})...)
	NewService(nil).Register(srv, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestApplySizeBound: an apply is bounded before any policy in it is
// decoded. gRPC refuses a message over MaxRequestBytes unread; a policy
// message or text over policy.MaxPolicyBytes is refused, naming the
// bound, and a message over the route bound before its text is parsed;
// all before the backend sees them (there is none here: any call that
// reached it would fail the test).
func TestApplySizeBound(t *testing.T) {
	const token = "size-test-token"
	client := adminv1.NewAdminServiceClient(serveAdmin(t, token))

	// routes builds a policy message of more than n bytes encoded, each
	// route the same size, its name padded with pad bytes.
	routes := func(n, pad int) *policyv1.Policy {
		route := func(i int) *policyv1.Route {
			return &policyv1.Route{Name: fmt.Sprintf("r%08d", i) + strings.Repeat("x", pad), Kind: "http", Backend: "voice"}
		}
		p := &policyv1.Policy{}
		for i := range n/proto.Size(&policyv1.Policy{Routes: []*policyv1.Route{route(0)}}) + 1 {
			p.Routes = append(p.Routes, route(i))
		}
		if proto.Size(p) <= n {
			t.Fatalf("built %d bytes, want more than %d", proto.Size(p), n)
		}
		return p
	}
	small := &policyv1.Policy{Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}}
	refusal := fmt.Sprintf("more than the %d bytes (4 MiB) a policy may have", policy.MaxPolicyBytes)
	tests := []struct {
		name string
		req  *adminv1.ApplyPolicyRequest
		code codes.Code
		want string
	}{
		{"a request over the message bound", &adminv1.ApplyPolicyRequest{Policy: small, ExpectedRevision: "r", PolicyYaml: strings.Repeat("#", MaxRequestBytes)},
			codes.ResourceExhausted, "larger than max"},
		{"text over the policy bound", &adminv1.ApplyPolicyRequest{Policy: small, ExpectedRevision: "r", PolicyYaml: strings.Repeat("#", policy.MaxPolicyBytes+1)},
			codes.InvalidArgument, "policy_yaml: the policy is 4194305 bytes, " + refusal},
		{"a policy message over the policy bound", &adminv1.ApplyPolicyRequest{Policy: routes(policy.MaxPolicyBytes, 1000), ExpectedRevision: "r"},
			codes.InvalidArgument, "policy: the encoded policy is"},
		// Text that does not parse: refused for its routes, from the
		// wire, and the text was not parsed.
		{"a policy message over the route bound", &adminv1.ApplyPolicyRequest{Policy: routes(policy.MaxRoutes*40, 0), ExpectedRevision: "r", PolicyYaml: "listeners: ["},
			codes.InvalidArgument, "policy: routes: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
			_, err := client.ApplyPolicy(ctx, tt.req)
			if got := status.Code(err); got != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v (%v), want %v containing %q", err, got, tt.code, tt.want)
			}
			if strings.Contains(tt.want, "encoded") && !strings.Contains(err.Error(), refusal) {
				t.Errorf("the refusal does not name the bound: %v", err)
			}
		})
	}
}

// rawCodec sends bytes as they are: a request no Go message could build
// without the memory the server is to be spared.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

// TestApplyOfEmptyMessagesRefusedUndecoded: four megabytes of empty
// routes (two bytes each) decode to about 800 MiB of Go structs; the
// server refuses them from the wire, before it decodes them, naming the
// field that holds them.
func TestApplyOfEmptyMessagesRefusedUndecoded(t *testing.T) {
	conn := serveAdmin(t, "t")
	routes := bytes.Repeat([]byte{0x12, 0x00}, policy.MaxPolicyBytes/2) // Policy.routes, empty
	req := protowire.AppendTag(nil, 1, protowire.BytesType)             // ApplyPolicyRequest.policy
	req = protowire.AppendBytes(req, routes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer t")
	err := conn.Invoke(ctx, adminv1.AdminService_ApplyPolicy_FullMethodName, req, &adminv1.ApplyPolicyResponse{}, grpc.ForceCodecV2(rawCodec{}))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "policy: routes: more than the 10000 entries a list may have") {
		t.Fatalf("%v, want InvalidArgument naming policy.routes", err)
	}
}

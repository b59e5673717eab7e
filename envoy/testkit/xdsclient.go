package testkit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// XDSClient is a minimal state-of-the-world ADS client that behaves like
// an Envoy that accepts everything: it subscribes, ACKs each response and
// keeps what it received, so a test can assert on what a client got.
type XDSClient struct {
	conn *grpc.ClientConn
	// OnAck, when set, is told of every ACK its sessions send, as it is
	// sent: a fleet of simulated nodes times changes by it.
	OnAck func(typeURL, version string)
}

// DialXDS connects to an xDS server; tlsCfg nil means plaintext.
func DialXDS(addr string, tlsCfg *tls.Config) (*XDSClient, error) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		return nil, err
	}
	return &XDSClient{conn: conn}, nil
}

// Close closes the connection.
func (c *XDSClient) Close() error { return c.conn.Close() }

// Subscription is what to ask for: resource names by type URL (empty
// names: every resource of the type).
type Subscription map[string][]string

// Session is one open ADS stream.
type Session struct {
	// Received holds every response, in order.
	Received []*discoveryv3.DiscoveryResponse
	stream   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	subs     Subscription
	followed atomic.Int64
	onAck    func(typeURL, version string)
}

// Sync opens a stream as node, subscribes to subs and ACKs responses until
// every type was answered once. It returns the session (with what was
// received, even on error) and the stream's error, if any.
func (c *XDSClient) Sync(ctx context.Context, node string, subs Subscription) (*Session, error) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return &Session{}, err
	}
	s := &Session{stream: stream, onAck: c.OnAck}
	first := true
	for typeURL, names := range subs {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names}
		if first {
			req.Node = &corev3.Node{Id: node, Cluster: "xds-test"}
			first = false
		}
		if err := stream.Send(req); err != nil {
			return s, s.recvErr(err)
		}
	}
	pending := map[string]bool{}
	for t := range subs {
		pending[t] = true
	}
	s.subs = subs
	for len(pending) > 0 {
		resp, err := stream.Recv()
		if err != nil {
			return s, err
		}
		s.Received = append(s.Received, resp)
		delete(pending, resp.GetTypeUrl())
		if err := s.ack(resp); err != nil {
			return s, err
		}
	}
	return s, nil
}

// ack accepts a response.
func (s *Session) ack(resp *discoveryv3.DiscoveryResponse) error {
	ack := &discoveryv3.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
		ResponseNonce: resp.GetNonce(), ResourceNames: s.subs[resp.GetTypeUrl()],
	}
	if err := s.stream.Send(ack); err != nil {
		return s.recvErr(err)
	}
	if s.onAck != nil {
		s.onAck(resp.GetTypeUrl(), resp.GetVersionInfo())
	}
	return nil
}

// Follow goes on after Sync as an Envoy that accepts everything would: it
// ACKs every response until the stream ends, and returns why it ended. It
// counts what it accepts (Followed) instead of keeping it, so that a node
// followed through many changes holds no more memory than one.
func (s *Session) Follow() error {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			return err
		}
		s.followed.Add(1)
		if err := s.ack(resp); err != nil {
			return err
		}
	}
}

// Followed is how many responses Follow has accepted so far.
func (s *Session) Followed() int64 { return s.followed.Load() }

// recvErr turns a failed Send into the stream's status: gRPC reports why a
// stream ended on Recv.
func (s *Session) recvErr(sendErr error) error {
	if _, err := s.stream.Recv(); err != nil {
		return err
	}
	return sendErr
}

// Close ends the stream.
func (s *Session) Close() {
	if s.stream != nil {
		s.stream.CloseSend()
	}
}

// SyncWithBackoff is Sync retried, as Envoy does, after a jittered,
// growing delay while the server refuses the stream as over its rate
// (RESOURCE_EXHAUSTED). It returns the session and how many times the
// stream was refused.
func (c *XDSClient) SyncWithBackoff(ctx context.Context, node string, subs Subscription) (*Session, int, error) {
	delay := 250 * time.Millisecond
	for refused := 0; ; refused++ {
		s, err := c.Sync(ctx, node, subs)
		if status.Code(err) != codes.ResourceExhausted {
			return s, refused, err
		}
		s.Close()
		wait := delay/2 + time.Duration(rand.Int64N(int64(delay)))
		select {
		case <-ctx.Done():
			return s, refused, errors.Join(ctx.Err(), err)
		case <-time.After(wait):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// Resources counts the resources a session received, for messages.
func (s *Session) Resources() int {
	n := 0
	for _, r := range s.Received {
		n += len(r.GetResources())
	}
	return n
}

func (s *Session) String() string {
	return fmt.Sprintf("%d responses, %d resources", len(s.Received), s.Resources())
}

// SubscribeAll asks for every resource of res, as an Envoy served them
// would: clusters and listeners by wildcard, the rest by name.
func SubscribeAll(res xdstype.Resources) Subscription {
	names := func(typeURL string) []string {
		var out []string
		for _, r := range res[typeURL] {
			out = append(out, cachev3.GetResourceName(r))
		}
		return out
	}
	return Subscription{
		resource.ClusterType: nil, resource.ListenerType: nil, resource.EndpointType: names(resource.EndpointType),
		resource.RouteType: names(resource.RouteType), resource.ExtensionConfigType: names(resource.ExtensionConfigType),
	}
}

// FollowNodes starts n simulated nodes (prefix-000, prefix-001, ...), each
// on a plaintext connection of its own: each syncs subs, retrying while
// the server refuses it over its rate, then ACKs everything it is sent
// until ctx ends. It returns once all of them synced, or the first error.
func FollowNodes(ctx context.Context, addr string, n int, prefix string, subs Subscription) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("%s-%03d", prefix, i)
			c, err := DialXDS(addr, nil)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", node, err)
				return
			}
			sess, _, err := c.SyncWithBackoff(ctx, node, subs)
			if err != nil {
				c.Close()
				errs <- fmt.Errorf("%s: %w", node, err)
				return
			}
			context.AfterFunc(ctx, func() { sess.Close(); c.Close() })
			go sess.Follow() // ends with the stream
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

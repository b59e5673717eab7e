package translate

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// corsPolicy is a REST route's CORS: exact origins, or "*.example.com" for
// any subdomain over either scheme.
func corsPolicy(c *policyv1.CORS) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.GetAllowMethods(), ","),
		AllowHeaders:  strings.Join(c.GetAllowHeaders(), ","),
		ExposeHeaders: strings.Join(c.GetExposeHeaders(), ","),
	}
	for _, o := range c.GetAllowOrigins() {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}}
		if suffix, ok := strings.CutPrefix(o, "*"); ok {
			m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: suffix}
		}
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, m)
	}
	if d := c.GetMaxAge(); d != nil {
		out.MaxAge = fmt.Sprint(int64(d.AsDuration().Seconds()))
	}
	if c.GetAllowCredentials() {
		out.AllowCredentials = wrapperspb.Bool(true)
	}
	return out
}

// rateLimit is a REST route's token bucket, enforced on every request: it
// refills requests_per_unit tokens each unit and holds at most burst (never
// less than requests_per_unit, or the rate could not be reached).
func rateLimit(route string, rl *policyv1.RateLimit) *ratelimitv3.LocalRateLimit {
	burst := max(rl.GetBurst(), rl.GetRequestsPerUnit())
	all := &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}
	return &ratelimitv3.LocalRateLimit{
		StatPrefix: "route_" + route,
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     burst,
			TokensPerFill: wrapperspb.UInt32(rl.GetRequestsPerUnit()),
			FillInterval:  durationpb.New(policy.RateLimitUnits[rl.GetUnit()]),
		},
		FilterEnabled:  &corev3.RuntimeFractionalPercent{DefaultValue: all, RuntimeKey: "directpipe.ratelimit.enabled"},
		FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: all, RuntimeKey: "directpipe.ratelimit.enforced"},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header: &corev3.HeaderValue{Key: "x-directpipe-ratelimited", Value: "true"},
		}},
	}
}

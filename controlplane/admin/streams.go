package admin

import (
	"context"
	"fmt"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// ListStreams answers for the whole fleet: the counts of every node that
// reports load to this control plane, or, with replicas, to any of them.
func (s *Service) ListStreams(ctx context.Context, req *adminv1.ListStreamsRequest) (*adminv1.ListStreamsResponse, error) {
	rows, nodes, err := s.backend.Streams(ctx)
	if err != nil {
		return nil, applyError(err)
	}
	resp := &adminv1.ListStreamsResponse{ReportingNodes: nodes}
	for _, r := range rows {
		if req.GetBackend() == "" || r.GetBackend() == req.GetBackend() {
			resp.Streams = append(resp.Streams, r)
		}
	}
	for _, d := range s.backend.Drains() {
		if req.GetBackend() == "" || d.GetBackend() == req.GetBackend() {
			resp.Drains = append(resp.Drains, d)
		}
	}
	return resp, nil
}

// DrainEndpoint starts or cancels a drain.
func (s *Service) DrainEndpoint(ctx context.Context, req *adminv1.DrainEndpointRequest) (*adminv1.DrainEndpointResponse, error) {
	if req.GetBackend() == "" || req.GetEndpoint() == "" {
		return nil, applyError(ErrInvalidArgument)
	}
	if err := req.GetDeadline().CheckValid(); req.GetDeadline() != nil && err != nil {
		return nil, applyError(ErrInvalidArgument)
	}
	d, err := s.backend.DrainEndpoint(ctx, req.GetBackend(), req.GetEndpoint(), req.GetDeadline().AsDuration(), req.GetCancel())
	if err != nil {
		return nil, applyError(err)
	}
	return &adminv1.DrainEndpointResponse{Drain: d}, nil
}

// Rebalance shows, and unless dry_run carries out, a back end's shed plan.
func (s *Service) Rebalance(ctx context.Context, req *adminv1.RebalanceRequest) (*adminv1.RebalanceResponse, error) {
	if req.GetBackend() == "" {
		return nil, applyError(fmt.Errorf("%w: name a back end", ErrInvalidArgument))
	}
	if err := req.GetWindow().CheckValid(); req.GetWindow() != nil && err != nil {
		return nil, applyError(fmt.Errorf("%w: window: %v", ErrInvalidArgument, err))
	}
	resp, err := s.backend.Rebalance(ctx, req.GetBackend(), req.GetWindow().AsDuration(), req.GetDryRun())
	if err != nil {
		return nil, applyError(err)
	}
	return resp, nil
}

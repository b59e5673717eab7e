package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/directpipe/directpipe/controlplane/policy"
)

// Condition types and reasons, as Gateway API spells its own.
const (
	Accepted   = "Accepted"
	Programmed = "Programmed"

	ReasonAccepted   = "Accepted"
	ReasonInvalid    = "Invalid"
	ReasonProgrammed = "Programmed"
	ReasonRefused    = "PolicyRefused"
)

// maxMessage bounds a condition's message (the schema allows 32 KiB).
const maxMessage = 4096

// statusWriter turns what the control plane made of the resources into
// their status; only the leader runs it.
type statusWriter struct {
	s        *Store
	recorder record.EventRecorder

	mu     sync.Mutex
	built  *Built
	served error
	wake   chan struct{}
}

func newStatusWriter(s *Store, scheme *runtime.Scheme) *statusWriter {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.kube.CoreV1().Events(s.cfg.Namespace)})
	return &statusWriter{
		s:        s,
		recorder: b.NewRecorder(scheme, corev1.EventSource{Component: "directpipe", Host: s.cfg.Identity}),
		wake:     make(chan struct{}, 1),
	}
}

// observe records the latest build and whether it was served.
func (w *statusWriter) observe(b *Built, served error) {
	w.mu.Lock()
	w.built, w.served = b, served
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes status while ctx (the leadership) lasts: at once, since a new
// leader cannot know what the old one wrote, and after every build.
func (w *statusWriter) run(ctx context.Context) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-retry.C:
		}
		w.mu.Lock()
		b, served := w.built, w.served
		w.mu.Unlock()
		if b == nil {
			continue
		}
		if err := w.write(ctx, b, served); err != nil && ctx.Err() == nil {
			// Usually a conflict with a newer object, whose own event
			// wakes us too; the timer covers an API server that failed.
			w.s.cfg.Log.Debug("writing status failed; trying again", "error", err)
			retry.Reset(w.s.cfg.RetryPeriod)
		}
	}
}

// write updates every object whose status changed.
func (w *statusWriter) write(ctx context.Context, b *Built, served error) error {
	problems := b.Problems(served)
	for _, be := range b.Backends {
		if s := be.Spec.Service; s != nil && s.Namespace != "" && s.Namespace != w.s.cfg.Namespace {
			k := Key("VoiceBackend", be.Name)
			problems[k] = append(problems[k], fmt.Sprintf("service.namespace: only Services in %q are watched", w.s.cfg.Namespace))
		}
	}
	programmed := metav1.Condition{Type: Programmed, Status: metav1.ConditionTrue, Reason: ReasonProgrammed,
		Message: "served to Envoy as policy revision " + policy.Revision(b.Policy)}
	if served != nil {
		programmed = metav1.Condition{Type: Programmed, Status: metav1.ConditionFalse, Reason: ReasonRefused,
			Message: bound("the namespace's policy is refused, the last good one keeps serving: " + served.Error())}
	}
	var errs []error
	update := func(obj client.Object, kind string, st *Status) {
		msgs := problems[Key(kind, obj.GetName())]
		accepted := metav1.Condition{Type: Accepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: "valid"}
		if len(msgs) > 0 {
			accepted = metav1.Condition{Type: Accepted, Status: metav1.ConditionFalse, Reason: ReasonInvalid, Message: bound(strings.Join(msgs, "; "))}
		}
		before := *deepCopy(st)
		for _, c := range []metav1.Condition{accepted, programmed} {
			c.ObservedGeneration = obj.GetGeneration()
			meta.SetStatusCondition(&st.Conditions, c)
		}
		st.ObservedGeneration = obj.GetGeneration()
		if equality.Semantic.DeepEqual(before, *st) {
			return
		}
		if err := w.s.client.Status().Update(ctx, obj); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, obj.GetName(), err))
			return
		}
		w.event(obj, before, accepted, programmed)
	}
	for _, r := range b.Routes {
		update(r, "VoiceRoute", &r.Status)
	}
	for _, be := range b.Backends {
		update(be, "VoiceBackend", &be.Status)
	}
	for _, hp := range b.Policies {
		update(hp, "HandshakePolicy", &hp.Status)
	}
	if err := w.writeGateway(ctx, b, served, problems); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("kube: status: %w", errs[0])
	}
	return nil
}

// event tells kubectl describe what changed.
func (w *statusWriter) event(obj runtime.Object, before Status, accepted, programmed metav1.Condition) {
	for _, c := range []metav1.Condition{accepted, programmed} {
		old := meta.FindStatusCondition(before.Conditions, c.Type)
		if old != nil && old.Status == c.Status && old.Message == c.Message {
			continue
		}
		kind := corev1.EventTypeNormal
		if c.Status != metav1.ConditionTrue {
			kind = corev1.EventTypeWarning
		}
		w.recorder.Event(obj, kind, c.Reason, c.Message)
	}
}

func bound(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	return strings.ToValidUTF8(s[:maxMessage], "") + "..."
}

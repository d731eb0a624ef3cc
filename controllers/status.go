package controllers

import (
	"context"
	"fmt"
	"reflect"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/internal/metrics"
)

// statusAttempts bounds the conflict retries of one status write; past it the error
// goes back to the work queue, which retries with backoff.
const statusAttempts = 5

// writeStatus sets *status (a field of obj) to want() and updates obj's status
// subresource, only when they differ, and records an Event for each outcome condition
// that flipped (rec may be nil). A conflict is retried at once against the object as
// the API server has it (live), recomputing want from it: a status write is never
// dropped because someone edited the object's labels or finalizers meanwhile, which
// no watch of ours would bring us back for. A deleted object is not an error.
func writeStatus[S any](ctx context.Context, c client.Client, live client.Reader, rec recorder.EventRecorder, obj client.Object,
	status *S, want func() S, conditions func(*S) []metav1.Condition) error {
	kind := reflect.TypeOf(obj).Elem().Name()
	for attempt := 1; ; attempt++ {
		w := want()
		if apiequality.Semantic.DeepEqual(*status, w) {
			return nil
		}
		before := conditions(status)
		*status = w
		err := c.Status().Update(ctx, obj, client.FieldOwner(FieldManager))
		switch {
		case err == nil:
			metrics.StatusWrites.WithLabelValues(kind).Inc()
			recordFlips(rec, obj, before, conditions(status))
			return nil
		case apierrors.IsNotFound(err):
			return nil
		case !apierrors.IsConflict(err) || attempt == statusAttempts:
			return fmt.Errorf("failed to update status of %s %s: %w", kind, client.ObjectKeyFromObject(obj), err)
		}
		metrics.StatusConflicts.WithLabelValues(kind).Inc()
		if err := live.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("failed to re-read %s %s after a conflict: %w", kind, client.ObjectKeyFromObject(obj), err)
		}
	}
}

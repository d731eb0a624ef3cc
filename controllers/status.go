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

// writeStatus sets *status to want and updates obj's status subresource, only when
// they differ, and records an Event for each outcome condition that flipped (rec may
// be nil). A conflict or a deleted object is not an error: its own watch event
// brings the reconciler back with the newer version.
func writeStatus[S any](ctx context.Context, c client.Client, rec recorder.EventRecorder, obj client.Object,
	status *S, want S, conditions func(*S) []metav1.Condition) error {
	if apiequality.Semantic.DeepEqual(*status, want) {
		return nil
	}
	before := conditions(status)
	*status = want
	kind := reflect.TypeOf(obj).Elem().Name()
	if err := c.Status().Update(ctx, obj, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("failed to update status of %s %s: %w", kind, client.ObjectKeyFromObject(obj), err)
	}
	metrics.StatusWrites.WithLabelValues(kind).Inc()
	recordFlips(rec, obj, before, conditions(status))
	return nil
}

package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/rollout"
)

// observe gathers what rollout.Step needs: the selection, older overlapping rollouts
// and the modes from the cache; and, for the namespaces rollout.Needs names only, the
// meshed pods (from the policy index) with their PodProxyConfigs read from the API
// with their status. That read is the only uncached one, and it is made for the
// namespaces in flight, or for those waiting while a promotion slot is free.
func (r *MTLSRolloutReconciler) observe(ctx context.Context, ro *v1alpha1.MTLSRollout, now time.Time) (rollout.Observation, error) {
	obs := rollout.Observation{Generation: ro.Generation, Modes: map[string]v1alpha1.Mode{}, Pods: map[string][]rollout.Pod{},
		ReportLag: r.ProxyReportInterval, Marks: map[string]rollout.Mark{}, ModeWriters: map[string]string{}}

	namespaces := &corev1.NamespaceList{}
	if err := r.Client.List(ctx, namespaces); err != nil {
		return obs, fmt.Errorf("failed to list namespaces: %w", err)
	}
	nsLabels := make(map[string]map[string]string, len(namespaces.Items))
	for i := range namespaces.Items {
		nsLabels[namespaces.Items[i].Name] = namespaces.Items[i].Labels
	}
	selector, err := metav1.LabelSelectorAsSelector(&ro.Spec.NamespaceSelector)
	switch {
	case err != nil:
		obs.SelectorError = err.Error()
	case selector.Empty():
		// Every namespace, the system ones included, is never what anyone meant.
		obs.SelectorError = "an empty selector would select every namespace; name the namespaces to move with labels"
	default:
		for i := range namespaces.Items {
			ns := &namespaces.Items[i]
			// A namespace being deleted takes no policy: it leaves the rollout.
			if ns.DeletionTimestamp == nil && selector.Matches(labels.Set(ns.Labels)) {
				obs.Selected = append(obs.Selected, ns.Name)
			}
		}
		sort.Strings(obs.Selected)
	}

	if obs.SelectorError == "" && !rollout.Finished(ro.Status.Phase) {
		if obs.Overlaps, err = r.olderOverlaps(ctx, ro, nsLabels); err != nil {
			return obs, err
		}
	}

	mesh := &v1alpha1.MeshMTLSPolicy{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, mesh); {
	case err == nil:
		obs.Mesh = rollout.Mesh{Mode: mesh.Spec.Mode, MinimumMode: mesh.Spec.MinimumMode}
	case !apierrors.IsNotFound(err):
		return obs, fmt.Errorf("failed to get MeshMTLSPolicy default: %w", err)
	}

	// Modes of the selected namespaces and of those the status remembers.
	want := map[string]bool{}
	for _, ns := range obs.Selected {
		want[ns] = true
	}
	for _, e := range ro.Status.Namespaces {
		want[e.Name] = true
	}
	for ns := range want {
		p := &v1alpha1.NamespaceMTLSPolicy{}
		switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1alpha1.NamespaceMTLSPolicyName}, p); {
		case err == nil:
			obs.Modes[ns] = p.Spec.Mode
			if m, ok := markOf(p); ok {
				obs.Marks[ns] = m
			}
			if w, err := r.modeWriterOf(ctx, ro, p); err != nil {
				return obs, err
			} else if w != "" {
				obs.ModeWriters[ns] = w
			}
		case !apierrors.IsNotFound(err):
			return obs, fmt.Errorf("failed to get NamespaceMTLSPolicy %s/default: %w", ns, err)
		}
	}

	for _, ns := range rollout.Needs(ro.Spec, ro.Status, obs, now) {
		pods, err := r.pods(ctx, ns)
		if err != nil {
			return obs, err
		}
		obs.Pods[ns] = pods
	}
	return obs, nil
}

// pods lists the meshed pods of a namespace, as the policy index knows them, with
// what their PodProxyConfigs say.
func (r *MTLSRolloutReconciler) pods(ctx context.Context, ns string) ([]rollout.Pod, error) {
	list := &v1alpha1.PodProxyConfigList{}
	if err := r.Reader.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("failed to list PodProxyConfigs in %s: %w", ns, err)
	}
	byName := make(map[string]*v1alpha1.PodProxyConfig, len(list.Items))
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	out := []rollout.Pod{}
	for _, name := range r.Index.Pods(ns) {
		res, meshed := r.Index.Resolve(ns, name)
		if !meshed {
			continue
		}
		out = append(out, rollout.PodFrom(name, types.UID(res.Pod.UID), byName[name]))
	}
	return out, nil
}

// olderOverlaps names the older unfinished rollouts that select some of the same
// namespaces (oldest first by creation, then by name). Admission refuses such a
// rollout; this catches one created while the webhook was down: the younger waits.
func (r *MTLSRolloutReconciler) olderOverlaps(ctx context.Context, ro *v1alpha1.MTLSRollout, nsLabels map[string]map[string]string) ([]string, error) {
	list := &v1alpha1.MTLSRolloutList{}
	if err := r.Client.List(ctx, list); err != nil {
		return nil, fmt.Errorf("failed to list MTLSRollouts: %w", err)
	}
	conflicts, err := rollout.Conflicts(ro, list.Items, nsLabels)
	if err != nil {
		return nil, nil // the selector error is reported on its own
	}
	byName := map[string]*v1alpha1.MTLSRollout{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	var out []string
	for _, c := range conflicts {
		other := byName[c.Rollout]
		if other.CreationTimestamp.Before(&ro.CreationTimestamp) ||
			(other.CreationTimestamp.Equal(&ro.CreationTimestamp) && other.Name < ro.Name) {
			out = append(out, other.Name)
		}
	}
	return out, nil
}

// markOf reads the promotion marks a rollout leaves on a policy it promoted until the
// namespace has soaked.
func markOf(p *v1alpha1.NamespaceMTLSPolicy) (rollout.Mark, bool) {
	by, ok := p.Annotations[v1alpha1.AnnotationPromotedBy]
	if !ok || by == "" {
		return rollout.Mark{}, false
	}
	m := rollout.Mark{By: by, PreviousMode: v1alpha1.Mode(p.Annotations[v1alpha1.AnnotationPreviousMode])}
	if t, err := time.Parse(time.RFC3339, p.Annotations[v1alpha1.AnnotationPromotedAt]); err == nil {
		m.At = t
	}
	return m, true
}

// modeWriterOf names who last wrote spec.mode of a policy the rollout promoted and
// that no longer says the target mode. The cache keeps no managedFields, so the policy
// is read from the API, and only then: someone contests the rollout's write.
func (r *MTLSRolloutReconciler) modeWriterOf(ctx context.Context, ro *v1alpha1.MTLSRollout, cached *v1alpha1.NamespaceMTLSPolicy) (string, error) {
	target := ro.Spec.TargetMode
	if target == "" {
		target = v1alpha1.ModeStrict
	}
	if cached.Spec.Mode == target {
		return "", nil
	}
	soaking := false
	for _, e := range ro.Status.Namespaces {
		soaking = soaking || (e.Name == cached.Namespace && e.State == v1alpha1.NamespaceSoaking)
	}
	if !soaking {
		return "", nil
	}
	p := &v1alpha1.NamespaceMTLSPolicy{}
	if err := r.Reader.Get(ctx, client.ObjectKeyFromObject(cached), p); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("failed to get NamespaceMTLSPolicy %s/default: %w", cached.Namespace, err)
	}
	return modeWriter(p), nil
}

// modeWriter names the field manager other than the rollout that last wrote spec.mode
// of the policy, from its managedFields; "" when none.
func modeWriter(p *v1alpha1.NamespaceMTLSPolicy) string {
	var name string
	var at time.Time
	for _, f := range p.ManagedFields {
		if f.Manager == RolloutFieldManager || f.Subresource != "" || f.FieldsV1 == nil || !ownsSpecMode(f.FieldsV1.Raw) {
			continue
		}
		if t := f.Time; name == "" || (t != nil && t.After(at)) {
			name = f.Manager
			if t != nil {
				at = t.Time
			}
		}
	}
	return name
}

func ownsSpecMode(raw []byte) bool {
	var fields map[string]map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return false
	}
	_, ok := fields["f:spec"]["f:mode"]
	return ok
}

// ownedOnlyByRollout: no field manager but the rollout has set a field of the object
// (the status, written by the operator, does not count).
func ownedOnlyByRollout(obj metav1.Object) bool {
	for _, f := range obj.GetManagedFields() {
		if f.Subresource == "" && f.Manager != RolloutFieldManager {
			return false
		}
	}
	return true
}

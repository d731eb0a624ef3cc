package controllers

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// TrustBundleReconciler keeps the ConfigMap meshtls-trust-bundle (key ca.crt) in every
// meshed namespace, and removes it from a namespace with no meshed pod left. Its key
// is {Name: namespace}.
//
// It watches the operator's PodProxyConfigs (which namespaces are meshed), the
// trust-bundle ConfigMaps, and the bundle's inputs (the ConfigMaps of the operator
// namespace, the operator's CertificateRequests and Certificates, the mesh policy),
// whose changes reach every meshed namespace through one coalesced fan-out. It is the
// only writer of trust-bundle ConfigMaps. When there is no valid bundle (an unusable
// spec.trustBundle, no CA known yet) it changes nothing: namespaces keep the bundle
// they hold, and the mesh status says why. A ConfigMap of the name that it did not
// create is left alone and reported.
type TrustBundleReconciler struct {
	Client   client.Client
	Bundles  *bundleSource
	Recorder recorder.EventRecorder

	foreign foreignReports
}

// Reconcile reconciles the trust bundle of one namespace.
func (r *TrustBundleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := req.Name
	key := client.ObjectKey{Namespace: ns, Name: identity.TrustBundleConfigMapName}
	cm, err := getOptional(ctx, r.Client, key, &corev1.ConfigMap{})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to get ConfigMap %s: %w", key, err)
	}
	meshed, err := namespaceMeshed(ctx, r.Client, ns)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !meshed || ns == r.Bundles.operatorNamespace {
		return ctrl.Result{}, deleteOwned(ctx, r.Client, cm)
	}
	if cm != nil && cm.Labels[ManagedByLabel] != ManagedByValue {
		r.foreign.report(r.Recorder, cm, "ConfigMap %s/%s was not created by meshtls-operator and is left alone, so the proxies of namespace %s do not get the mesh trust bundle from it: delete it and the operator creates its own", ns, cm.Name, ns)
		return ctrl.Result{}, nil
	}
	bundle, err := r.Bundles.get(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	if bundle.PEM == nil {
		// Nothing valid to distribute: keep what the namespace holds.
		return ctrl.Result{}, nil
	}
	want := string(bundle.PEM)
	if cm != nil && cm.Data[identity.TrustBundleKey] == want && cm.DeletionTimestamp == nil {
		return ctrl.Result{}, nil
	}
	if cm == nil {
		obj := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: ns, Labels: map[string]string{ManagedByLabel: ManagedByValue}},
			Data:       map[string]string{identity.TrustBundleKey: want},
		}
		if err := r.Client.Create(ctx, obj, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("failed to create ConfigMap %s: %w", key, err)
		}
		log.FromContext(ctx).V(1).Info("created the trust bundle", "namespace", ns, "cas", bundle.CAs)
		return ctrl.Result{}, nil
	}
	ac := corev1apply.ConfigMap(key.Name, ns).WithUID(cm.UID).
		WithLabels(map[string]string{ManagedByLabel: ManagedByValue}).
		WithData(map[string]string{identity.TrustBundleKey: want})
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return ctrl.Result{}, ignoreRace(err, "failed to apply ConfigMap %s/%s: %w", ns, key.Name)
	}
	log.FromContext(ctx).V(1).Info("updated the trust bundle", "namespace", ns, "cas", bundle.CAs)
	return ctrl.Result{}, nil
}

// deleteOwned deletes an object the operator made (by its label, with its UID as a
// precondition); anything else, and nil, is left alone.
func deleteOwned[T client.Object](ctx context.Context, c client.Client, obj T) error {
	if isNil(obj) || obj.GetLabels()[ManagedByLabel] != ManagedByValue || obj.GetDeletionTimestamp() != nil {
		return nil
	}
	uid := obj.GetUID()
	if err := c.Delete(ctx, obj, client.Preconditions{UID: &uid}); err != nil {
		return ignoreRace(err, "failed to delete %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName())
	}
	log.FromContext(ctx).V(1).Info("deleted", "kind", fmt.Sprintf("%T", obj), "object", client.ObjectKeyFromObject(obj))
	return nil
}

func isNil[T client.Object](obj T) bool {
	var zero T
	return any(obj) == any(zero)
}

// foreignReports records a Warning Event once for each foreign object (by UID and
// resource version), so a reconcile loop does not repeat it.
type foreignReports struct{ seen sync.Map }

func (f *foreignReports) report(rec recorder.EventRecorder, obj client.Object, format string, args ...any) {
	key := string(obj.GetUID()) + "/" + obj.GetResourceVersion()
	if _, loaded := f.seen.LoadOrStore(key, true); loaded || rec == nil {
		return
	}
	rec.Eventf(obj, nil, corev1.EventTypeWarning, v1alpha1.ReasonNotOwned, "Reconcile", format, args...)
}

// bundleSource assembles the trust bundle from the cache: the ConfigMap that the mesh
// spec.trustBundle names (in the operator namespace), and the status.ca of the issued
// CertificateRequests that identity.RequestTrusted accepts: requests to the mesh
// issuer, of the operator's own workload Certificates (which ask the mesh issuer too)
// in meshed namespaces. Labels alone prove nothing: anyone may set them, and
// cert-manager copies them from any Certificate onto its requests. It computes once
// per change of its inputs: the event handlers call changed() before they wake anyone.
type bundleSource struct {
	reader            client.Reader
	operatorNamespace string

	generation atomic.Uint64
	mu         sync.Mutex
	computed   uint64
	valid      bool
	result     identity.BundleResult
}

// changed marks the inputs changed.
func (s *bundleSource) changed() { s.generation.Add(1) }

// get is the current bundle.
func (s *bundleSource) get(ctx context.Context) (identity.BundleResult, error) {
	gen := s.generation.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.valid && s.computed == gen {
		return s.result, nil
	}
	res, err := s.compute(ctx)
	if err != nil {
		return identity.BundleResult{}, err
	}
	s.result, s.computed, s.valid = res, gen, true
	return res, nil
}

func (s *bundleSource) compute(ctx context.Context) (identity.BundleResult, error) {
	var in identity.BundleInput
	mesh, err := getOptional(ctx, s.reader, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, &v1alpha1.MeshMTLSPolicy{})
	if err != nil {
		return identity.BundleResult{}, fmt.Errorf("failed to get MeshMTLSPolicy default: %w", err)
	}
	if mesh != nil && mesh.Spec.TrustBundle != nil {
		ref := mesh.Spec.TrustBundle.ConfigMapRef
		k := ref.Key
		if k == "" {
			k = identity.TrustBundleKey
		}
		tb := &identity.TrustBundleInput{Ref: fmt.Sprintf("ConfigMap %s/%s, key %s", s.operatorNamespace, ref.Name, k)}
		cm, err := getOptional(ctx, s.reader, client.ObjectKey{Namespace: s.operatorNamespace, Name: ref.Name}, &corev1.ConfigMap{})
		if err != nil {
			return identity.BundleResult{}, fmt.Errorf("failed to get ConfigMap %s/%s: %w", s.operatorNamespace, ref.Name, err)
		}
		if cm != nil {
			tb.Found = true
			if v, ok := cm.Data[k]; ok {
				tb.Data = &v
			} else if b, ok := cm.BinaryData[k]; ok {
				v := string(b)
				tb.Data = &v
			}
		}
		in.TrustBundle = tb
	}

	if mesh == nil {
		// No mesh, no mesh issuer: no request can be the mesh's.
		return identity.AssembleBundle(in), nil
	}
	issuer := identity.IssuerRef(mesh.Spec.IssuerRef)

	meshed, err := meshedNamespaceSet(ctx, s.reader)
	if err != nil {
		return identity.BundleResult{}, err
	}
	certs := &cmapi.CertificateList{}
	if err := s.reader.List(ctx, certs, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err != nil {
		return identity.BundleResult{}, fmt.Errorf("failed to list Certificates: %w", err)
	}
	owners := make(map[types.UID]*cmapi.Certificate, len(certs.Items))
	for i := range certs.Items {
		owners[certs.Items[i].UID] = &certs.Items[i]
	}
	requests := &cmapi.CertificateRequestList{}
	if err := s.reader.List(ctx, requests, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err != nil {
		return identity.BundleResult{}, fmt.Errorf("failed to list CertificateRequests: %w", err)
	}
	for i := range requests.Items {
		cr := &requests.Items[i]
		if !requestIssued(cr) {
			continue
		}
		var owner *cmapi.Certificate
		if ref := metav1.GetControllerOf(cr); ref != nil {
			owner = owners[ref.UID]
		}
		if !identity.RequestTrusted(issuer, cr, owner, meshed[cr.Namespace]) {
			continue
		}
		in.Issued++
		in.RequestCAs = append(in.RequestCAs, string(cr.Status.CA))
	}
	return identity.AssembleBundle(in), nil
}

// meshedNamespaceSet is the set of namespaces with one of the operator's
// PodProxyConfigs.
func meshedNamespaceSet(ctx context.Context, c client.Reader) (map[string]bool, error) {
	list := &v1alpha1.PodProxyConfigList{}
	if err := c.List(ctx, list, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("failed to list PodProxyConfigs: %w", err)
	}
	out := map[string]bool{}
	for i := range list.Items {
		out[list.Items[i].Namespace] = true
	}
	return out, nil
}

// certificateTrustEvents calls changed when one of the operator's Certificates comes
// or goes, or when what decides whether its requests count changes: its issuerRef,
// labels or annotations (RequestTrusted). Status updates, the bulk of the events,
// change nothing here.
func certificateTrustEvents(changed func()) handler.EventHandler {
	ours := func(obj client.Object) bool { return obj.GetLabels()[ManagedByLabel] == ManagedByValue }
	return handlerFuncs{
		CreateFunc: func(_ context.Context, e createEvent, _ queue) {
			if ours(e.Object) {
				changed()
			}
		},
		UpdateFunc: func(_ context.Context, e updateEvent, _ queue) {
			o, ok1 := e.ObjectOld.(*cmapi.Certificate)
			n, ok2 := e.ObjectNew.(*cmapi.Certificate)
			if !ok1 || !ok2 || !(ours(o) || ours(n)) {
				return
			}
			if o.Spec.IssuerRef != n.Spec.IssuerRef || !maps.Equal(o.Labels, n.Labels) || !maps.Equal(o.Annotations, n.Annotations) {
				changed()
			}
		},
		DeleteFunc: func(_ context.Context, e deleteEvent, _ queue) {
			if ours(e.Object) {
				changed()
			}
		},
	}
}

func requestIssued(cr *cmapi.CertificateRequest) bool {
	for _, c := range cr.Status.Conditions {
		if c.Type == cmapi.CertificateRequestConditionReady {
			return c.Status == cmmeta.ConditionTrue
		}
	}
	return false
}

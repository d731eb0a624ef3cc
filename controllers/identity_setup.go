package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// The identity half of the mesh: three small controllers, each the only writer of one
// kind of object, all driven by the PodProxyConfigs the operator keeps (one per meshed
// pod, so "a ServiceAccount runs a meshed pod" and "a namespace is meshed" are read
// from the cache, never from an index that could lag behind the event):
//
//	PodProxyConfig (ns, sa) ──► CertificateReconciler  ──► Certificate meshtls-<sa>
//	                  │                                         │ cert-manager
//	                  │                                         ▼
//	                  │            CertificateRequest status.ca ─┐
//	                  │            spec.trustBundle ConfigMap ───┤ bundleSource
//	                  ├──────────► TrustBundleReconciler ◄──────┘──► ConfigMap meshtls-trust-bundle
//	                  └──────────► ProxyRBACReconciler ──────────────► RoleBinding meshtls-proxy
//
// The PodProxyConfig controller reads the Certificate back into spec.certificate, and
// the mesh-status reconciler reads all of it into the MeshMTLSPolicy status.

// RBAC of the identity controllers. The operator reads no Secret, ever: the trust
// bundle comes from CertificateRequest status.ca and from a ConfigMap. It may bind
// the one ClusterRole meshtls-proxy, and nothing else (no escalate).
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests;issuers;clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=meshtls-proxy

// IdentityOptions configure the identity controllers.
type IdentityOptions struct {
	// OperatorNamespace holds the ConfigMap that MeshMTLSPolicy spec.trustBundle names.
	OperatorNamespace string
	// MeshChanged wakes the mesh-status reconciler; nil wakes nobody.
	MeshChanged func()
	// Clock is the clock of the expiry counts; the real one when nil.
	Clock clock.PassiveClock
	// FanoutDelay coalesces changes of the trust bundle's inputs into one pass over
	// the meshed namespaces; 500ms when zero.
	FanoutDelay time.Duration
}

// Identity is what the identity controllers share with the others: the trust-bundle
// source, and the gatherer of the mesh status's identity part.
type Identity struct {
	bundles *bundleSource
	status  *identityStatus
}

// indexCertificateName indexes the operator's PodProxyConfigs by the name of their
// ServiceAccount's Certificate.
const indexCertificateName = "meshtls.io/certificate-name"

// proxyConfigServiceAccount is the ServiceAccount a PodProxyConfig names ("default"
// when empty, as the pod's).
func proxyConfigServiceAccount(p *v1alpha1.PodProxyConfig) string {
	if p.Spec.ServiceAccountName == "" {
		return "default"
	}
	return p.Spec.ServiceAccountName
}

// IdentityCacheOptions are the cache settings of the kinds the identity controllers
// read, for the manager's cache.Options.ByObject: ConfigMaps and RoleBindings only
// under the operator's names (plus every ConfigMap of the operator namespace, where
// spec.trustBundle points), the operator's CertificateRequests only and trimmed to
// their CA, and Certificates trimmed. Same-name objects of others are cached too:
// that is how they are seen, reported and left alone.
func IdentityCacheOptions(operatorNamespace string) map[client.Object]cache.ByObject {
	ours := labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue})
	configMaps := map[string]cache.Config{
		cache.AllNamespaces: {FieldSelector: fields.OneTermEqualSelector("metadata.name", identity.TrustBundleConfigMapName)},
	}
	if operatorNamespace != "" {
		configMaps[operatorNamespace] = cache.Config{FieldSelector: fields.Everything()}
	}
	return map[client.Object]cache.ByObject{
		&cmapi.Certificate{}:        {Transform: trimCertificate},
		&cmapi.CertificateRequest{}: {Label: ours, Transform: trimCertificateRequest},
		&corev1.ConfigMap{}:         {Namespaces: configMaps, Transform: cache.TransformStripManagedFields()},
		&rbacv1.RoleBinding{}:       {Field: fields.OneTermEqualSelector("metadata.name", identity.ProxyRoleName), Transform: cache.TransformStripManagedFields()},
	}
}

// trimCertificate keeps what the operator reads of a Certificate. Of one that is not
// the operator's it keeps only the name, labels and annotations: enough to know it
// holds a name and is someone else's.
func trimCertificate(obj any) (any, error) {
	c, ok := obj.(*cmapi.Certificate)
	if !ok {
		return obj, nil
	}
	c.ManagedFields = nil
	if c.Labels[ManagedByLabel] != ManagedByValue {
		c.Spec = cmapi.CertificateSpec{}
		c.Status = cmapi.CertificateStatus{}
	}
	return c, nil
}

// trimCertificateRequest keeps the metadata of a CertificateRequest, its issuerRef
// (whether its CA may be trusted depends on it), its conditions and its CA: not the
// CSR, not the issued chain.
func trimCertificateRequest(obj any) (any, error) {
	cr, ok := obj.(*cmapi.CertificateRequest)
	if !ok {
		return obj, nil
	}
	cr.ManagedFields = nil
	cr.Annotations = nil
	cr.Spec = cmapi.CertificateRequestSpec{IssuerRef: cr.Spec.IssuerRef}
	cr.Status.Certificate = nil
	return cr, nil
}

// SetupIdentity registers the identity controllers and the PodProxyConfig index they
// read. Call it before the manager starts.
func SetupIdentity(mgr ctrl.Manager, o IdentityOptions) (*Identity, error) {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.FanoutDelay <= 0 {
		o.FanoutDelay = 500 * time.Millisecond
	}
	meshChanged := o.MeshChanged
	if meshChanged == nil {
		meshChanged = func() {}
	}
	err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.PodProxyConfig{}, indexCertificateName, func(obj client.Object) []string {
		p, ok := obj.(*v1alpha1.PodProxyConfig)
		if !ok || !ours(p) {
			return nil
		}
		return []string{identity.CertificateName(proxyConfigServiceAccount(p))}
	})
	if err != nil {
		return nil, fmt.Errorf("failed to index PodProxyConfigs by certificate: %w", err)
	}

	c := mgr.GetClient()
	rec := mgr.GetEventRecorder("meshtls-operator")
	bundles := &bundleSource{reader: c, operatorNamespace: o.OperatorNamespace}
	id := &Identity{
		bundles: bundles,
		status:  &identityStatus{reader: c, bundles: bundles, clock: o.Clock},
	}

	err = ctrl.NewControllerManagedBy(mgr).
		Named("certificate").
		Watches(&v1alpha1.PodProxyConfig{}, proxyConfigEvents(meshChanged, func(p *v1alpha1.PodProxyConfig) reconcile.Request {
			return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: identity.CertificateName(proxyConfigServiceAccount(p))}}
		})).
		Watches(&cmapi.Certificate{}, certificateEvents(meshChanged)).
		Watches(&v1alpha1.MeshMTLSPolicy{}, meshPolicyEvents(func(ctx context.Context) []reconcile.Request { return certificateKeys(ctx, c) })).
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Complete(&CertificateReconciler{Client: c, Recorder: rec})
	if err != nil {
		return nil, fmt.Errorf("failed to set up the certificate controller: %w", err)
	}

	fanout := &fanoutSource{delay: o.FanoutDelay, list: func(ctx context.Context) []string { return meshedNamespaces(ctx, c) }}
	inputsChanged := func() {
		bundles.changed()
		fanout.trigger()
		meshChanged()
	}
	namespaceKey := func(p *v1alpha1.PodProxyConfig) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Namespace}}
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("trustbundle").
		WatchesRawSource(fanout).
		Watches(&v1alpha1.PodProxyConfig{}, proxyConfigEvents(meshChanged, namespaceKey)).
		Watches(&corev1.ConfigMap{}, configMapEvents(o.OperatorNamespace, inputsChanged, meshChanged)).
		Watches(&cmapi.CertificateRequest{}, changeEvents(inputsChanged)).
		Watches(&v1alpha1.MeshMTLSPolicy{}, meshPolicyEvents(func(context.Context) []reconcile.Request { inputsChanged(); return nil })).
		// The Certificates (UID, issuerRef, ownership marks) and the meshed
		// namespaces decide which requests count, and the issuers' state is part of
		// the mesh status: these only wake the others.
		Watches(&cmapi.Certificate{}, certificateTrustEvents(inputsChanged)).
		Watches(&v1alpha1.PodProxyConfig{}, createDeleteEvents(inputsChanged)).
		Watches(&cmapi.ClusterIssuer{}, changeEvents(meshChanged)).
		Watches(&cmapi.Issuer{}, changeEvents(meshChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(&TrustBundleReconciler{Client: c, Bundles: bundles, Recorder: rec})
	if err != nil {
		return nil, fmt.Errorf("failed to set up the trustbundle controller: %w", err)
	}

	err = ctrl.NewControllerManagedBy(mgr).
		Named("proxyrbac").
		Watches(&v1alpha1.PodProxyConfig{}, proxyConfigEvents(meshChanged, namespaceKey)).
		Watches(&rbacv1.RoleBinding{}, namespaceEvents(identity.ProxyRoleName, meshChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(&ProxyRBACReconciler{Client: c, Recorder: rec})
	if err != nil {
		return nil, fmt.Errorf("failed to set up the proxyrbac controller: %w", err)
	}
	return id, nil
}

// CertificateToProxyConfigs maps a Certificate to the PodProxyConfigs (named after
// their pods) of the ServiceAccount it is named for, so that spec.certificate follows
// the Certificate.
func CertificateToProxyConfigs(c client.Reader) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		list := &v1alpha1.PodProxyConfigList{}
		if err := c.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexCertificateName: obj.GetName()},
			client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return out
	})
}

// certificateState is a PodProxyConfig's spec.certificate: its ServiceAccount's
// Certificate as the cache holds it.
func certificateState(ctx context.Context, c client.Reader, namespace string, spec *v1alpha1.PodProxyConfigSpec) (*v1alpha1.CertificateState, error) {
	sa := spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	cert, err := getOptional(ctx, c, client.ObjectKey{Namespace: namespace, Name: identity.CertificateName(sa)}, &cmapi.Certificate{})
	if err != nil {
		return nil, fmt.Errorf("failed to get Certificate %s/%s: %w", namespace, identity.CertificateName(sa), err)
	}
	st := identity.State(cert, sa, spec.Identity)
	return &st, nil
}

// meshedNamespaces are the namespaces with at least one of the operator's
// PodProxyConfigs, sorted.
func meshedNamespaces(ctx context.Context, c client.Reader) []string {
	list := &v1alpha1.PodProxyConfigList{}
	if err := c.List(ctx, list, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for i := range list.Items {
		if ns := list.Items[i].Namespace; !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	return out
}

// namespaceMeshed reports whether a namespace has a meshed pod: one of the operator's
// PodProxyConfigs.
func namespaceMeshed(ctx context.Context, c client.Reader, namespace string) (bool, error) {
	list := &v1alpha1.PodProxyConfigList{}
	if err := c.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{ManagedByLabel: ManagedByValue},
		client.Limit(1), client.UnsafeDisableDeepCopy); err != nil {
		return false, fmt.Errorf("failed to list the PodProxyConfigs of namespace %s: %w", namespace, err)
	}
	return len(list.Items) > 0, nil
}

// getOptional gets an object from the cache; nil when it does not exist.
func getOptional[T client.Object](ctx context.Context, c client.Reader, key client.ObjectKey, obj T) (T, error) {
	var zero T
	if err := c.Get(ctx, key, obj); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return zero, nil
		}
		return zero, err
	}
	return obj, nil
}

// fanoutSource is a controller source that, when triggered, enqueues every meshed
// namespace, at most once per delay: a burst of CertificateRequest updates becomes one
// pass over the namespaces.
type fanoutSource struct {
	delay time.Duration
	list  func(context.Context) []string

	mu      sync.Mutex
	ctx     context.Context
	q       queue
	pending bool
}

var _ source.Source = &fanoutSource{}

// Start implements source.Source.
func (f *fanoutSource) Start(ctx context.Context, q queue) error {
	f.mu.Lock()
	f.ctx, f.q = ctx, q
	f.mu.Unlock()
	f.trigger()
	return nil
}

func (f *fanoutSource) trigger() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.q == nil || f.pending {
		return
	}
	f.pending = true
	time.AfterFunc(f.delay, func() {
		f.mu.Lock()
		f.pending = false
		ctx, q := f.ctx, f.q
		f.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		for _, ns := range f.list(ctx) {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}})
		}
	})
}

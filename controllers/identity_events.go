package controllers

import (
	"context"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// Event handlers of the identity controllers. Each maps an event to the keys it can
// affect and nothing more; updates that change nothing the controllers read wake
// nobody.

// proxyConfigEvents maps the operator's PodProxyConfigs, when they come and go, to
// key(p). Their updates do not change their ServiceAccount or namespace (a pod's
// ServiceAccount is immutable; a new pod of the same name gets a new object).
func proxyConfigEvents(meshChanged func(), key func(*v1alpha1.PodProxyConfig) reconcile.Request) handler.EventHandler {
	add := func(obj client.Object, q queue) {
		if p, ok := obj.(*v1alpha1.PodProxyConfig); ok && ours(p) {
			q.Add(key(p))
			meshChanged()
		}
	}
	return handlerFuncs{
		CreateFunc: func(_ context.Context, e createEvent, q queue) { add(e.Object, q) },
		UpdateFunc: func(_ context.Context, e updateEvent, q queue) {
			old, ok1 := e.ObjectOld.(*v1alpha1.PodProxyConfig)
			p, ok2 := e.ObjectNew.(*v1alpha1.PodProxyConfig)
			if ok1 && ok2 && (ours(old) != ours(p) || proxyConfigServiceAccount(old) != proxyConfigServiceAccount(p)) {
				if ours(old) {
					q.Add(key(old))
				}
				add(p, q)
			}
		},
		DeleteFunc: func(_ context.Context, e deleteEvent, q queue) { add(e.Object, q) },
	}
}

// certificateEvents maps a Certificate whose name the operator could use (meshtls-*)
// to itself; a change of its status wakes the mesh status too.
func certificateEvents(meshChanged func()) handler.EventHandler {
	add := func(obj client.Object, q queue) {
		if strings.HasPrefix(obj.GetName(), identity.CertificateName("")) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
			meshChanged()
		}
	}
	return handlerFuncs{
		CreateFunc: func(_ context.Context, e createEvent, q queue) { add(e.Object, q) },
		UpdateFunc: func(_ context.Context, e updateEvent, q queue) {
			old, ok1 := e.ObjectOld.(*cmapi.Certificate)
			c, ok2 := e.ObjectNew.(*cmapi.Certificate)
			if ok1 && ok2 && old.Generation == c.Generation && apiequality.Semantic.DeepEqual(old.Status, c.Status) &&
				apiequality.Semantic.DeepEqual(old.Labels, c.Labels) && apiequality.Semantic.DeepEqual(old.Annotations, c.Annotations) &&
				old.DeletionTimestamp.Equal(c.DeletionTimestamp) {
				return
			}
			add(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e deleteEvent, q queue) { add(e.Object, q) },
	}
}

// certificateKeys are all the keys of the certificate controller: the Certificate of
// every ServiceAccount with a meshed pod, and every Certificate the operator holds.
func certificateKeys(ctx context.Context, c client.Reader) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	add := func(k types.NamespacedName) {
		if !seen[k] {
			seen[k] = true
			out = append(out, reconcile.Request{NamespacedName: k})
		}
	}
	ppcs := &v1alpha1.PodProxyConfigList{}
	if err := c.List(ctx, ppcs, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err == nil {
		for i := range ppcs.Items {
			p := &ppcs.Items[i]
			add(types.NamespacedName{Namespace: p.Namespace, Name: identity.CertificateName(proxyConfigServiceAccount(p))})
		}
	}
	certs := &cmapi.CertificateList{}
	if err := c.List(ctx, certs, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err == nil {
		for i := range certs.Items {
			add(client.ObjectKeyFromObject(&certs.Items[i]))
		}
	}
	return out
}

// meshPolicyEvents calls keys when the MeshMTLSPolicy "default" comes, goes, or its
// spec changes (its status is the operator's own write), and enqueues what it returns.
func meshPolicyEvents(keys func(context.Context) []reconcile.Request) handler.EventHandler {
	add := func(ctx context.Context, obj client.Object, q queue) {
		if obj.GetName() != v1alpha1.MeshMTLSPolicyName {
			return
		}
		for _, k := range keys(ctx) {
			q.Add(k)
		}
	}
	return handlerFuncs{
		CreateFunc: func(ctx context.Context, e createEvent, q queue) { add(ctx, e.Object, q) },
		UpdateFunc: func(ctx context.Context, e updateEvent, q queue) {
			if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() {
				add(ctx, e.ObjectNew, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e deleteEvent, q queue) { add(ctx, e.Object, q) },
	}
}

// configMapEvents maps a trust-bundle ConfigMap to its namespace, and a ConfigMap of
// the operator namespace (where spec.trustBundle points) to inputsChanged.
func configMapEvents(operatorNamespace string, inputsChanged, meshChanged func()) handler.EventHandler {
	add := func(obj client.Object, q queue) {
		if obj.GetName() == identity.TrustBundleConfigMapName && obj.GetNamespace() != operatorNamespace {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: obj.GetNamespace()}})
			meshChanged()
		}
		if obj.GetNamespace() == operatorNamespace {
			inputsChanged()
		}
	}
	return allEvents(add)
}

// namespaceEvents maps an object named name to its namespace.
func namespaceEvents(name string, meshChanged func()) handler.EventHandler {
	return allEvents(func(obj client.Object, q queue) {
		if obj.GetName() == name {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: obj.GetNamespace()}})
			meshChanged()
		}
	})
}

// changeEvents calls changed on every event (the resync of an unchanged object
// aside) and enqueues nothing.
func changeEvents(changed func()) handler.EventHandler {
	return allEvents(func(client.Object, queue) { changed() })
}

// createDeleteEvents calls changed when an object of the operator's comes or goes.
func createDeleteEvents(changed func()) handler.EventHandler {
	call := func(obj client.Object) {
		if obj.GetLabels()[ManagedByLabel] == ManagedByValue {
			changed()
		}
	}
	return handlerFuncs{
		CreateFunc: func(_ context.Context, e createEvent, _ queue) { call(e.Object) },
		DeleteFunc: func(_ context.Context, e deleteEvent, _ queue) { call(e.Object) },
	}
}

func allEvents(add func(client.Object, queue)) handler.EventHandler {
	return handlerFuncs{
		CreateFunc: func(_ context.Context, e createEvent, q queue) { add(e.Object, q) },
		UpdateFunc: func(_ context.Context, e updateEvent, q queue) {
			if e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion() {
				add(e.ObjectNew, q)
			}
		},
		DeleteFunc: func(_ context.Context, e deleteEvent, q queue) { add(e.Object, q) },
	}
}

package controllers

import (
	"context"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// queue is the PodProxyConfig controller's work queue.
type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// feeder keeps the policy index in step with the informers. Each handler applies the
// change to the index first and only then wakes the reconcilers that depend on it, so
// no reconciler reads an index older than the event that woke it. It wakes:
//   - the PodProxyConfig controller, for exactly the pods the change can affect;
//   - the policy-status controller, for the namespace of the change;
//   - the mesh-status controller, when meshed pods may have changed.
//
// Updates that change nothing the resolver reads (pod status, policy status, a
// Service's ports) wake nobody.
type feeder struct {
	index  *policy.Index
	status *notifier // keys: {Name: namespace}
	mesh   *notifier // key: {Name: "default"}
}

var meshKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: v1alpha1.MeshMTLSPolicyName}}

func (f *feeder) namespaceChanged(ns string) {
	f.status.notify(reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}})
	f.mesh.notify(meshKey)
}

func (f *feeder) enqueueNamespace(q queue, ns string) {
	for _, name := range f.index.Pods(ns) {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
}

func enqueuePods(q queue, ns string, names []string) {
	for _, name := range names {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
}

func (f *feeder) enqueueAll(q queue) {
	for _, ns := range f.index.Namespaces() {
		f.enqueueNamespace(q, ns)
		f.status.notify(reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}})
	}
	f.mesh.notify(meshKey)
}

// funcs builds an event handler from apply (create and update) and remove (delete).
// relevant reports whether an update changed anything the resolver reads.
func funcs[T client.Object](apply func(T, queue), remove func(T, queue), relevant func(old, new T) bool) handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q queue) {
			if obj, ok := e.Object.(T); ok {
				apply(obj, q)
			}
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q queue) {
			old, ok1 := e.ObjectOld.(T)
			obj, ok2 := e.ObjectNew.(T)
			if ok1 && ok2 && relevant(old, obj) {
				apply(obj, q)
			}
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q queue) {
			if obj, ok := e.Object.(T); ok {
				remove(obj, q)
			}
		},
	}
}

func (f *feeder) pods() handler.TypedEventHandler[client.Object, reconcile.Request] {
	key := func(p *corev1.Pod) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}}
	}
	return funcs(
		func(p *corev1.Pod, q queue) {
			f.index.ApplyPod(policy.PodFrom(p))
			q.Add(key(p))
			f.namespaceChanged(p.Namespace)
		},
		func(p *corev1.Pod, q queue) {
			f.index.DeletePod(p.Namespace, p.Name)
			q.Add(key(p))
			f.namespaceChanged(p.Namespace)
		},
		func(old, p *corev1.Pod) bool {
			return old.UID != p.UID || !maps.Equal(old.Labels, p.Labels) ||
				old.Spec.ServiceAccountName != p.Spec.ServiceAccountName ||
				!slices.Equal(policy.PodFrom(old).Ports, policy.PodFrom(p).Ports)
		},
	)
}

func (f *feeder) namespaces() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return funcs(
		func(n *corev1.Namespace, q queue) {
			f.index.ApplyNamespace(policy.NamespaceFrom(n))
			f.enqueueNamespace(q, n.Name)
			f.namespaceChanged(n.Name)
		},
		func(n *corev1.Namespace, q queue) {
			f.index.DeleteNamespace(n.Name)
			f.enqueueNamespace(q, n.Name)
			f.namespaceChanged(n.Name)
		},
		func(old, n *corev1.Namespace) bool {
			return old.Labels[policy.InjectLabel] != n.Labels[policy.InjectLabel]
		},
	)
}

func (f *feeder) services() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return funcs(
		func(s *corev1.Service, q queue) {
			if affected := f.index.ApplyService(policy.ServiceFrom(s)); len(affected) > 0 {
				enqueuePods(q, s.Namespace, affected)
				f.namespaceChanged(s.Namespace)
			}
		},
		func(s *corev1.Service, q queue) {
			if affected := f.index.DeleteService(s.Namespace, s.Name); len(affected) > 0 {
				enqueuePods(q, s.Namespace, affected)
			}
			// A targetRef may now name a missing Service.
			f.namespaceChanged(s.Namespace)
		},
		func(old, s *corev1.Service) bool { return !maps.Equal(old.Spec.Selector, s.Spec.Selector) },
	)
}

// specChanged is the relevance test of the policy kinds: their status writes (ours)
// do not change the generation.
func specChanged[T client.Object](old, obj T) bool { return old.GetGeneration() != obj.GetGeneration() }

func (f *feeder) namespacePolicies() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return funcs(
		func(p *v1alpha1.NamespaceMTLSPolicy, q queue) {
			if np, ok := policy.NamespacePolicyFrom(p); ok {
				f.index.ApplyNamespacePolicy(np)
				f.enqueueNamespace(q, p.Namespace)
			}
			f.namespaceChanged(p.Namespace)
		},
		func(p *v1alpha1.NamespaceMTLSPolicy, q queue) {
			if p.Name == v1alpha1.NamespaceMTLSPolicyName {
				f.index.DeleteNamespacePolicy(p.Namespace)
				f.enqueueNamespace(q, p.Namespace)
			}
			f.namespaceChanged(p.Namespace)
		},
		specChanged[*v1alpha1.NamespaceMTLSPolicy],
	)
}

func (f *feeder) workloadPolicies() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return funcs(
		func(p *v1alpha1.WorkloadMTLSPolicy, q queue) {
			enqueuePods(q, p.Namespace, f.index.ApplyWorkloadPolicy(policy.WorkloadPolicyFrom(p)))
			f.namespaceChanged(p.Namespace)
		},
		func(p *v1alpha1.WorkloadMTLSPolicy, q queue) {
			enqueuePods(q, p.Namespace, f.index.DeleteWorkloadPolicy(p.Namespace, p.Name))
			f.namespaceChanged(p.Namespace)
		},
		specChanged[*v1alpha1.WorkloadMTLSPolicy],
	)
}

func (f *feeder) meshPolicies() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return funcs(
		func(p *v1alpha1.MeshMTLSPolicy, q queue) {
			if p.Name != v1alpha1.MeshMTLSPolicyName {
				return
			}
			f.index.SetMesh(policy.MeshFrom(p))
			f.enqueueAll(q)
		},
		func(p *v1alpha1.MeshMTLSPolicy, q queue) {
			if p.Name != v1alpha1.MeshMTLSPolicyName {
				return
			}
			f.index.SetMesh(nil)
			f.enqueueAll(q)
		},
		specChanged[*v1alpha1.MeshMTLSPolicy],
	)
}

// proxyConfigs maps a PodProxyConfig to its pod, so that a PodProxyConfig edited or
// deleted by someone else, or left behind by a pod that is gone, is put right.
func (f *feeder) proxyConfigs() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q queue) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)})
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q queue) {
			if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() {
				q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.ObjectNew)})
			}
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q queue) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)})
		},
	}
}

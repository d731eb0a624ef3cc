package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// queue is the PodProxyConfig controller's work queue.
type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

type (
	handlerFuncs = handler.TypedFuncs[client.Object, reconcile.Request]
	createEvent  = event.TypedCreateEvent[client.Object]
	updateEvent  = event.TypedUpdateEvent[client.Object]
	deleteEvent  = event.TypedDeleteEvent[client.Object]
)

// ErrNotReady is what admission answers until the index has absorbed the initial
// list of every kind it reads: a webhook that answered from a partial index would
// admit conflicts it cannot see.
var ErrNotReady = errors.New("meshtls-operator is starting and its policy index is not filled yet; retry in a few seconds")

// Feeder keeps the policy index in step with the shared informers. It runs on every
// replica, leader or not, because the admission webhooks answer from every replica
// and read the index; the controllers it wakes run on the leader only.
//
// Each handler applies the change to the index first and only then wakes the
// reconcilers that depend on it, so no reconciler reads an index older than the event
// that woke it. It wakes:
//   - the PodProxyConfig controller, for exactly the pods the change can affect;
//   - the policy-status controller, for the namespace of the change;
//   - the mesh-status controller, when meshed pods may have changed.
//
// Updates that change nothing the resolver reads (pod status, policy status, a
// Service's ports) wake nobody. Until a controller starts (on a replica that is not
// the leader, it never does) its wake-ups are dropped; when it starts it is handed
// every pod once.
type Feeder struct {
	index  *policy.Index
	cache  cache.Cache
	pods   *podSource
	status *notifier // keys: {Name: namespace}
	mesh   *notifier // key: {Name: "default"}

	mu    sync.Mutex
	regs  []toolscache.ResourceEventHandlerRegistration
	ready atomic.Bool
	done  chan struct{} // closed once ready
}

var _ manager.LeaderElectionRunnable = &Feeder{}

// NewFeeder returns a feeder of ix from the manager's cache. statusDelay coalesces
// bursts of changes into one status write per namespace.
func NewFeeder(ix *policy.Index, c cache.Cache, statusDelay time.Duration) *Feeder {
	f := &Feeder{
		index:  ix,
		cache:  c,
		status: newNotifier(statusDelay),
		mesh:   newNotifier(statusDelay),
		done:   make(chan struct{}),
	}
	f.pods = &podSource{feeder: f}
	return f
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: the index is fed on
// every replica.
func (f *Feeder) NeedLeaderElection() bool { return false }

// Start registers the handlers on the shared informers and returns once the index
// has absorbed their initial lists (or ctx ends). The handlers keep running after.
func (f *Feeder) Start(ctx context.Context) error {
	kinds := []struct {
		obj     client.Object
		handler toolscache.ResourceEventHandler
	}{
		{&corev1.Namespace{}, f.namespaces()},
		{&v1alpha1.MeshMTLSPolicy{}, f.meshPolicies()},
		{&v1alpha1.NamespaceMTLSPolicy{}, f.namespacePolicies()},
		{&v1alpha1.WorkloadMTLSPolicy{}, f.workloadPolicies()},
		{&corev1.Service{}, f.services()},
		{&corev1.Pod{}, f.podHandler()},
	}
	for _, k := range kinds {
		inf, err := f.cache.GetInformer(ctx, k.obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("failed to get the informer of %T: %w", k.obj, err)
		}
		reg, err := inf.AddEventHandler(k.handler)
		if err != nil {
			return fmt.Errorf("failed to add the index handler of %T: %w", k.obj, err)
		}
		f.mu.Lock()
		f.regs = append(f.regs, reg)
		f.mu.Unlock()
	}
	// A registration has synced once its handler has been handed every object of
	// the informer's initial list: then, and only then, the index holds them.
	ok := toolscache.WaitForCacheSync(ctx.Done(), f.synced)
	if !ok {
		return nil // ctx ended
	}
	f.ready.Store(true)
	close(f.done)
	return nil
}

func (f *Feeder) synced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.regs {
		if !r.HasSynced() {
			return false
		}
	}
	return len(f.regs) > 0
}

// Ready returns ErrNotReady until the index has absorbed the initial list of every
// kind it reads.
func (f *Feeder) Ready() error {
	if !f.ready.Load() {
		return ErrNotReady
	}
	return nil
}

// Checker is the /readyz check: a replica whose index is not filled cannot answer
// admission, so the webhook Service must not route to it.
func (f *Feeder) Checker(*http.Request) error { return f.Ready() }

// waitReady blocks until the index is filled or ctx ends.
func (f *Feeder) waitReady(ctx context.Context) error {
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// podSource is the PodProxyConfig controller's source of wake-ups from the feeder.
type podSource struct {
	feeder *Feeder
	mu     sync.Mutex
	q      queue
}

var _ source.SyncingSource = &podSource{}

// Start implements source.Source: from now on the feeder's wake-ups reach q, and,
// once the index is filled, every pod it holds is handed over once (wake-ups before
// the controller started were dropped).
func (s *podSource) Start(ctx context.Context, q queue) error {
	s.mu.Lock()
	s.q = q
	s.mu.Unlock()
	go func() {
		if s.feeder.waitReady(ctx) == nil {
			s.feeder.enqueueAll()
		}
	}()
	return nil
}

// WaitForSync implements source.SyncingSource.
func (s *podSource) WaitForSync(ctx context.Context) error { return s.feeder.waitReady(ctx) }

func (s *podSource) add(ns string, names ...string) {
	s.mu.Lock()
	q := s.q
	s.mu.Unlock()
	if q == nil {
		return
	}
	for _, name := range names {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
}

var meshKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: v1alpha1.MeshMTLSPolicyName}}

func (f *Feeder) namespaceChanged(ns string) {
	f.status.notify(reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}})
	f.mesh.notify(meshKey)
}

func (f *Feeder) enqueueNamespace(ns string) { f.pods.add(ns, f.index.Pods(ns)...) }

func (f *Feeder) enqueueAll() {
	for _, ns := range f.index.Namespaces() {
		f.enqueueNamespace(ns)
		f.status.notify(reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}})
	}
	f.mesh.notify(meshKey)
}

// funcs builds an informer handler from apply (add and update) and remove (delete).
// relevant reports whether an update changed anything the resolver reads.
func funcs[T client.Object](apply func(T), remove func(T), relevant func(old, new T) bool) toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(T); ok {
				apply(o)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(T)
			o, ok2 := newObj.(T)
			if ok1 && ok2 && relevant(old, o) {
				apply(o)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if o, ok := obj.(T); ok {
				remove(o)
			}
		},
	}
}

// podHandler feeds pods, which the informer stores as PodSummary (see TrimPod).
func (f *Feeder) podHandler() toolscache.ResourceEventHandler {
	return funcs(
		func(p *PodSummary) {
			f.index.ApplyPod(p.Pod)
			f.pods.add(p.Namespace, p.Name)
			f.namespaceChanged(p.Namespace)
		},
		func(p *PodSummary) {
			f.index.DeletePod(p.Namespace, p.Name)
			f.pods.add(p.Namespace, p.Name)
			f.namespaceChanged(p.Namespace)
		},
		func(old, p *PodSummary) bool { return !old.Pod.Equal(p.Pod) },
	)
}

func (f *Feeder) namespaces() toolscache.ResourceEventHandler {
	return funcs(
		func(n *corev1.Namespace) {
			f.index.ApplyNamespace(policy.NamespaceFrom(n))
			f.enqueueNamespace(n.Name)
			f.namespaceChanged(n.Name)
		},
		func(n *corev1.Namespace) {
			f.index.DeleteNamespace(n.Name)
			f.enqueueNamespace(n.Name)
			f.namespaceChanged(n.Name)
		},
		func(old, n *corev1.Namespace) bool {
			return old.Labels[policy.InjectLabel] != n.Labels[policy.InjectLabel]
		},
	)
}

func (f *Feeder) services() toolscache.ResourceEventHandler {
	return funcs(
		func(s *corev1.Service) {
			f.pods.add(s.Namespace, f.index.ApplyService(policy.ServiceFrom(s))...)
			// Always: a targetRefs policy that named a missing Service must see it
			// appear (TargetNotFound clears) even when it selects no meshed pod.
			f.namespaceChanged(s.Namespace)
		},
		func(s *corev1.Service) {
			f.pods.add(s.Namespace, f.index.DeleteService(s.Namespace, s.Name)...)
			// A targetRef may now name a missing Service.
			f.namespaceChanged(s.Namespace)
		},
		func(old, s *corev1.Service) bool { return !maps.Equal(old.Spec.Selector, s.Spec.Selector) },
	)
}

// specChanged is the relevance test of the policy kinds: their status writes (ours)
// do not change the generation.
func specChanged[T client.Object](old, obj T) bool { return old.GetGeneration() != obj.GetGeneration() }

func (f *Feeder) namespacePolicies() toolscache.ResourceEventHandler {
	return funcs(
		func(p *v1alpha1.NamespaceMTLSPolicy) {
			if np, ok := policy.NamespacePolicyFrom(p); ok {
				f.index.ApplyNamespacePolicy(np)
				f.enqueueNamespace(p.Namespace)
			}
			f.namespaceChanged(p.Namespace)
		},
		func(p *v1alpha1.NamespaceMTLSPolicy) {
			if p.Name == v1alpha1.NamespaceMTLSPolicyName {
				f.index.DeleteNamespacePolicy(p.Namespace)
				f.enqueueNamespace(p.Namespace)
			}
			f.namespaceChanged(p.Namespace)
		},
		specChanged[*v1alpha1.NamespaceMTLSPolicy],
	)
}

func (f *Feeder) workloadPolicies() toolscache.ResourceEventHandler {
	return funcs(
		func(p *v1alpha1.WorkloadMTLSPolicy) {
			f.pods.add(p.Namespace, f.index.ApplyWorkloadPolicy(policy.WorkloadPolicyFrom(p))...)
			f.namespaceChanged(p.Namespace)
		},
		func(p *v1alpha1.WorkloadMTLSPolicy) {
			f.pods.add(p.Namespace, f.index.DeleteWorkloadPolicy(p.Namespace, p.Name)...)
			f.namespaceChanged(p.Namespace)
		},
		specChanged[*v1alpha1.WorkloadMTLSPolicy],
	)
}

func (f *Feeder) meshPolicies() toolscache.ResourceEventHandler {
	return funcs(
		func(p *v1alpha1.MeshMTLSPolicy) {
			if p.Name != v1alpha1.MeshMTLSPolicyName {
				return
			}
			f.index.SetMesh(policy.MeshFrom(p))
			f.enqueueAll()
		},
		func(p *v1alpha1.MeshMTLSPolicy) {
			if p.Name != v1alpha1.MeshMTLSPolicyName {
				return
			}
			f.index.SetMesh(nil)
			f.enqueueAll()
		},
		specChanged[*v1alpha1.MeshMTLSPolicy],
	)
}

// proxyConfigHandler maps a PodProxyConfig to its pod, so that a PodProxyConfig
// edited or deleted by someone else, or left behind by a pod that is gone, is put
// right. It is an ordinary (leader-only) watch of the PodProxyConfig controller: the
// index does not read PodProxyConfigs.
func proxyConfigHandler() handlerFuncs {
	return handlerFuncs{
		CreateFunc: func(_ context.Context, e createEvent, q queue) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)})
		},
		UpdateFunc: func(_ context.Context, e updateEvent, q queue) {
			if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				!maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
				q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.ObjectNew)})
			}
		},
		DeleteFunc: func(_ context.Context, e deleteEvent, q queue) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)})
		},
	}
}

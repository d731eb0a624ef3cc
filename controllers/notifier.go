package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// notifier is a controller source that other code pushes keys into. It never blocks
// the pusher (an informer event handler): keys pushed before the controller starts
// wait in a set, and keys pushed after are added to its queue after delay, which
// coalesces a burst of changes into one reconcile.
type notifier struct {
	delay   time.Duration
	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending map[reconcile.Request]struct{}
}

var _ source.Source = &notifier{}

func newNotifier(delay time.Duration) *notifier {
	return &notifier{delay: delay, pending: map[reconcile.Request]struct{}{}}
}

// Start implements source.Source.
func (n *notifier) Start(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.queue = q
	for req := range n.pending {
		q.Add(req)
	}
	n.pending = nil
	return nil
}

// notify asks for a reconcile of req.
func (n *notifier) notify(req reconcile.Request) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.queue == nil {
		n.pending[req] = struct{}{}
		return
	}
	n.queue.AddAfter(req, n.delay)
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WaitForInjection waits until the API server calls the sidecar injector: a webhook
// configuration just created, or a webhook server just started, takes a moment to be
// in force, and a pod created before that is admitted without a sidecar. It dry-runs
// a pod in a meshed namespace (made if missing) until the pod comes back with the
// meshtls-proxy native sidecar.
func (e *Env) WaitForInjection(ctx context.Context, timeout time.Duration) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "injection-probe", Labels: map[string]string{"meshtls.io/inject": "enabled"}}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "probe"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
		if last = e.Client.Create(ctx, pod, client.DryRunAll); last != nil {
			continue
		}
		// The proxy is a native sidecar: an init container that keeps running.
		for _, c := range pod.Spec.InitContainers {
			if c.Name == "meshtls-proxy" {
				return nil
			}
		}
		last = errors.New("a pod was admitted without a sidecar")
	}
	return fmt.Errorf("the injector is not in force after %s: %v", timeout, last)
}

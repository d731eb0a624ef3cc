package guard

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestSidecarGuard: a pod's images stay mutable after admission; the sidecar guard
// keeps the proxy of an injected pod from being swapped for one that enforces nothing.
func TestSidecarGuard(t *testing.T) {
	ctx := context.Background()
	admin := env.Client
	install(t, render(t, "config/guard", "meshtls-system"))
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sidecars"}}))
	injected := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sidecars", Name: "injected", Annotations: map[string]string{"meshtls.io/injected": "ghcr.io/meshtls/meshtls-proxy:dev"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "meshtls-init", Image: "ghcr.io/meshtls/meshtls-proxy:dev", Args: []string{"capture"}},
				{Name: "meshtls-proxy", Image: "ghcr.io/meshtls/meshtls-proxy:dev", Args: []string{"proxy"}, RestartPolicy: ptrTo(corev1.ContainerRestartPolicyAlways)},
			},
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
	must(t, admin.Create(ctx, injected))
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sidecars", Name: "plain"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	must(t, admin.Create(ctx, plain))

	swap := func(name, container, image string) error {
		pod := &corev1.Pod{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "sidecars", Name: name}, pod); err != nil {
			return err
		}
		for i := range pod.Spec.InitContainers {
			if pod.Spec.InitContainers[i].Name == container {
				pod.Spec.InitContainers[i].Image = image
			}
		}
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == container {
				pod.Spec.Containers[i].Image = image
			}
		}
		return admin.Update(ctx, pod)
	}
	waitForGuard(t, func() error { return swap("injected", "meshtls-proxy", "evil/noop:1") }, "may not be changed or removed")

	t.Run("the proxy image of an injected pod cannot be swapped", func(t *testing.T) {
		wantRefused(t, swap("injected", "meshtls-proxy", "evil/noop:1"), "meshtls-proxy and meshtls-init containers of an injected pod may not be changed")
	})
	t.Run("the capture step's image cannot be swapped", func(t *testing.T) {
		wantRefused(t, swap("injected", "meshtls-init", "evil/noop:1"), "may not be changed or removed")
	})
	t.Run("the injected mark cannot be dropped", func(t *testing.T) {
		pod := &corev1.Pod{}
		must(t, admin.Get(ctx, client.ObjectKeyFromObject(injected), pod))
		delete(pod.Annotations, "meshtls.io/injected")
		wantRefused(t, admin.Update(ctx, pod), "meshtls.io/injected annotation of an injected pod may not be changed or removed")
	})
	t.Run("the application's image of an injected pod can still be updated", func(t *testing.T) {
		must(t, swap("injected", "app", "registry.example/app:2"))
	})
	t.Run("pods that were not injected are not concerned", func(t *testing.T) {
		must(t, swap("plain", "app", "registry.example/app:2"))
	})
}

func ptrTo[T any](v T) *T { return &v }

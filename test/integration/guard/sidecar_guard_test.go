package guard

import (
	"context"
	"fmt"
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
				{Name: "meshtls-proxy", Image: "ghcr.io/meshtls/meshtls-proxy:dev", Args: []string{"proxy"}, RestartPolicy: ptrTo(corev1.ContainerRestartPolicyAlways),
					SecurityContext: &corev1.SecurityContext{RunAsUser: ptrTo[int64](proxyUID), RunAsGroup: ptrTo[int64](proxyUID)}},
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

// proxyUID is the user injection runs the proxy as (inject.Default's ProxyUID); the
// guard reads it from the pod, so any value works.
const proxyUID = 1337

// TestSidecarGuardEphemeralContainers: an ephemeral container shares the pod's network
// namespace, where capture's rules live. On an injected pod, the sidecar guard refuses
// one that could rewrite the rules (privileged, NET_ADMIN, SYS_ADMIN, ALL), bypass
// them (the proxy's UID) or read the proxy's key (SYS_PTRACE on its processes), and
// admits the debug containers `kubectl debug` adds.
func TestSidecarGuardEphemeralContainers(t *testing.T) {
	ctx := context.Background()
	admin := env.Client
	install(t, render(t, "config/guard", "meshtls-system"))
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "debugged"}}))
	injectedPod := func(name string, podSC *corev1.PodSecurityContext, sharePIDs bool) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "debugged", Name: name, Annotations: map[string]string{"meshtls.io/injected": "ghcr.io/meshtls/meshtls-proxy:dev"}},
			Spec: corev1.PodSpec{
				SecurityContext:       podSC,
				ShareProcessNamespace: ptrTo(sharePIDs),
				InitContainers: []corev1.Container{
					{Name: "meshtls-init", Image: "ghcr.io/meshtls/meshtls-proxy:dev", Args: []string{"capture"}},
					{Name: "meshtls-proxy", Image: "ghcr.io/meshtls/meshtls-proxy:dev", Args: []string{"proxy"}, RestartPolicy: ptrTo(corev1.ContainerRestartPolicyAlways),
						SecurityContext: &corev1.SecurityContext{RunAsUser: ptrTo[int64](proxyUID), RunAsGroup: ptrTo[int64](proxyUID)}},
				},
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
			},
		}
		must(t, admin.Create(ctx, p))
		return p
	}
	injected := injectedPod("injected", nil, false)
	shared := injectedPod("shared-pids", nil, true)
	// What injection refuses, but a pod made without it could say: every container,
	// ephemeral ones included, runs as the proxy's user unless it says otherwise.
	asProxy := injectedPod("pod-runs-as-proxy", &corev1.PodSecurityContext{RunAsUser: ptrTo[int64](proxyUID)}, false)
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "debugged", Name: "plain"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	must(t, admin.Create(ctx, plain))

	n := 0
	debug := func(pod *corev1.Pod, target string, sc *corev1.SecurityContext) error {
		n++
		got := &corev1.Pod{}
		if err := admin.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
			return err
		}
		got.Spec.EphemeralContainers = append(got.Spec.EphemeralContainers, corev1.EphemeralContainer{
			TargetContainerName: target,
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: fmt.Sprintf("debugger-%d", n), Image: "busybox:1", Stdin: true, TTY: true, SecurityContext: sc,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent,
			},
		})
		return admin.SubResource("ephemeralcontainers").Update(ctx, got)
	}
	caps := func(add ...corev1.Capability) *corev1.SecurityContext {
		return &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: add}}
	}
	privileged := &corev1.SecurityContext{Privileged: ptrTo(true)}
	waitForGuard(t, func() error { return debug(injected, "", privileged) }, "may not be privileged in a meshtls-injected pod")

	refused := []struct {
		name string
		pod  *corev1.Pod
		// target is the container whose processes the debugger sees.
		target string
		sc     *corev1.SecurityContext
		want   string
	}{
		{"privileged", injected, "", privileged, "may not be privileged in a meshtls-injected pod"},
		{"NET_ADMIN", injected, "", caps("NET_ADMIN"), "may not add capability NET_ADMIN, SYS_ADMIN or ALL"},
		{"SYS_ADMIN, as the runtime also reads it", injected, "app", caps("CHOWN", "cap_sys_admin"), "may not add capability NET_ADMIN, SYS_ADMIN or ALL"},
		{"ALL", injected, "", caps("ALL"), "may not add capability NET_ADMIN, SYS_ADMIN or ALL"},
		{"the proxy's user", injected, "", &corev1.SecurityContext{RunAsUser: ptrTo[int64](proxyUID)}, "may not run as user 1337, the meshtls proxy's"},
		{"the proxy's user, from the pod", asProxy, "", nil, "may not run as user 1337, the meshtls proxy's"},
		{"SYS_PTRACE on the proxy", injected, "meshtls-proxy", caps("SYS_PTRACE"), "may not add capability SYS_PTRACE where it sees the meshtls proxy's processes"},
		{"SYS_PTRACE in a shared process namespace", shared, "", caps("SYS_PTRACE"), "may not add capability SYS_PTRACE where it sees the meshtls proxy's processes"},
	}
	for _, c := range refused {
		t.Run("refused: "+c.name, func(t *testing.T) {
			wantRefused(t, debug(c.pod, c.target, c.sc), "ephemeral container debugger-", c.want)
		})
	}

	admitted := []struct {
		name   string
		pod    *corev1.Pod
		target string
		sc     *corev1.SecurityContext
	}{
		{"kubectl debug (legacy profile)", injected, "app", nil},
		{"kubectl debug --profile=general, on the application", injected, "app", caps("SYS_PTRACE")},
		{"kubectl debug --profile=netadmin... on a pod that was not injected", plain, "", &corev1.SecurityContext{Privileged: ptrTo(true), Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}},
		{"another user than the proxy's", asProxy, "", &corev1.SecurityContext{RunAsUser: ptrTo[int64](1000)}},
		{"a second debugger beside the first", injected, "", &corev1.SecurityContext{RunAsNonRoot: ptrTo(true), RunAsUser: ptrTo[int64](1000)}},
	}
	for _, c := range admitted {
		t.Run("admitted: "+c.name, func(t *testing.T) {
			if err := debug(c.pod, c.target, c.sc); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
	t.Run("the debuggers were added", func(t *testing.T) {
		got := &corev1.Pod{}
		must(t, admin.Get(ctx, client.ObjectKeyFromObject(injected), got))
		if len(got.Spec.EphemeralContainers) != 3 {
			t.Errorf("injected pod has %d ephemeral containers, want the 3 admitted: %v", len(got.Spec.EphemeralContainers), got.Spec.EphemeralContainers)
		}
	})
}

func ptrTo[T any](v T) *T { return &v }

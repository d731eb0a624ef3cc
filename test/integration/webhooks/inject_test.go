package webhooks

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/inject"
)

func created(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatalf("failed to create pod %s: %v", p.Name, err)
	}
	got := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func TestInjection(t *testing.T) {
	namespace(t, "inj", true)
	namespace(t, "plain", false)
	namespace(t, "meshtls-system", true)

	mustCreate(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "inj", Name: "web"}})
	app := pod("inj", "web", map[string]string{"app": "web"})
	app.Spec.ServiceAccountName = "web"
	app.Annotations = map[string]string{inject.AnnotationExcludeOutboundPorts: "5432"}
	app.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	app.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}}}
	app.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	got := created(t, app)

	t.Run("a pod in a labelled namespace gets the proxy as a native sidecar after the capture step", func(t *testing.T) {
		if len(got.Spec.InitContainers) != 2 || got.Spec.InitContainers[0].Name != "meshtls-init" || got.Spec.InitContainers[1].Name != "meshtls-proxy" {
			t.Fatalf("init containers: %+v", got.Spec.InitContainers)
		}
		proxy := got.Spec.InitContainers[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Error("restartPolicy is not Always")
		}
		if proxy.Image != inject.DefaultConfig().ProxyImage {
			t.Errorf("image %s", proxy.Image)
		}
		env := map[string]string{}
		for _, e := range proxy.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				env[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
		}
		for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_UID": "metadata.uid"} {
			if env[name] != path {
				t.Errorf("env %s = %q, want fieldRef %s", name, env[name], path)
			}
		}
		if p := proxy.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 15021 {
			t.Errorf("readiness probe = %+v, want HTTP on 15021", p)
		}
		if proxy.Resources.Requests.Cpu().IsZero() || proxy.Resources.Requests.Memory().IsZero() {
			t.Errorf("resource requests missing: %+v", proxy.Resources)
		}
		sc := proxy.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
			t.Errorf("proxy security context = %+v", sc)
		}
		capture := strings.Join(got.Spec.InitContainers[0].Args, " ")
		for _, want := range []string{"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337", "--exclude-outbound-ports=5432"} {
			if !strings.Contains(capture, want) {
				t.Errorf("capture args %q lack %q", capture, want)
			}
		}
	})

	t.Run("the certificate and trust bundle volumes are optional, named after the service account", func(t *testing.T) {
		var secret *corev1.SecretVolumeSource
		var bundle *corev1.ConfigMapVolumeSource
		for _, v := range got.Spec.Volumes {
			if v.Secret != nil && v.Name == "meshtls-certs" {
				secret = v.Secret
			}
			if v.ConfigMap != nil && v.Name == "meshtls-trust" {
				bundle = v.ConfigMap
			}
		}
		if secret == nil || secret.SecretName != "meshtls-web-tls" || secret.Optional == nil || !*secret.Optional {
			t.Errorf("certificate volume = %+v", secret)
		}
		if bundle == nil || bundle.Name != "meshtls-trust-bundle" || bundle.Optional == nil || !*bundle.Optional {
			t.Errorf("trust bundle volume = %+v", bundle)
		}
	})

	t.Run("HTTP and TCP probes go to the proxy's health port, the originals kept", func(t *testing.T) {
		c := container(got.Spec.Containers, "app")
		if c.ReadinessProbe.HTTPGet.Port.IntValue() != 15021 || c.ReadinessProbe.HTTPGet.Path != "/app-health/app/readiness" {
			t.Errorf("readiness = %+v", c.ReadinessProbe.HTTPGet)
		}
		if c.LivenessProbe.TCPSocket != nil || c.LivenessProbe.HTTPGet.Path != "/app-health/app/liveness" {
			t.Errorf("liveness = %+v", c.LivenessProbe)
		}
		var originals map[string]corev1.Probe
		if err := json.Unmarshal([]byte(got.Annotations[inject.AnnotationOriginalProbes]), &originals); err != nil {
			t.Fatal(err)
		}
		if originals["app/readiness"].HTTPGet == nil || originals["app/readiness"].HTTPGet.Path != "/ready" || originals["app/liveness"].TCPSocket == nil {
			t.Errorf("originals = %+v", originals)
		}
	})

	t.Run("injection is idempotent", func(t *testing.T) {
		again := got.DeepCopy()
		again.ObjectMeta = metav1.ObjectMeta{Namespace: "inj", Name: "web-again", Labels: got.Labels, Annotations: got.Annotations}
		second := created(t, again)
		if !equality.Semantic.DeepEqual(second.Spec.InitContainers, got.Spec.InitContainers) || len(second.Spec.Volumes) != len(got.Spec.Volumes) {
			t.Errorf("injecting an injected pod changed it:\n%+v\n%+v", second.Spec.InitContainers, got.Spec.InitContainers)
		}
	})

	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"a pod that opts out is not injected", pod("inj", "out", map[string]string{"meshtls.io/inject": "disabled"}), false},
		{"a pod in an unlabelled namespace is not injected", pod("plain", "p", nil), false},
		{"a pod labelled for injection is injected in an unlabelled namespace", pod("plain", "in", map[string]string{"meshtls.io/inject": "enabled"}), true},
		{"a host-network pod is not injected", func() *corev1.Pod { p := pod("inj", "host", nil); p.Spec.HostNetwork = true; return p }(), false},
		{"a pod in the operator's namespace is not injected", pod("meshtls-system", "op", nil), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := inject.Injected(created(t, tt.pod)); got != tt.want {
				t.Errorf("injected = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("a pod that cannot be injected safely is refused with the reason", func(t *testing.T) {
		bad := pod("inj", "bad", nil)
		bad.Annotations = map[string]string{inject.AnnotationExcludeInboundPorts: "http"}
		err := k8s.Create(context.Background(), bad)
		if err == nil || !strings.Contains(err.Error(), "meshtls.io/exclude-inbound-ports") {
			t.Errorf("want a refusal naming the annotation, got %v", err)
		}
	})
}

package inject

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func appPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{AnnotationExcludeInboundPorts: "9000, 8081"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			Containers: []corev1.Container{{
				Name: "app", Image: "app:1",
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 7},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
				StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
			}},
		},
	}
}

func TestInject(t *testing.T) {
	pod := appPod()
	if err := Inject(pod, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.InitContainers) != 2 || pod.Spec.InitContainers[0].Name != CaptureContainer || pod.Spec.InitContainers[1].Name != ProxyContainer {
		t.Fatalf("init containers = %v, want capture then proxy", pod.Spec.InitContainers)
	}
	proxy := pod.Spec.InitContainers[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the proxy must be a native sidecar (restartPolicy Always)")
	}
	sc := proxy.SecurityContext
	if sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || *sc.RunAsUser != 1337 {
		t.Errorf("proxy security context = %+v", sc)
	}
	if got := strings.Join(pod.Spec.InitContainers[0].Args, " "); !strings.Contains(got, "--exclude-inbound-ports=8081,9000,15021,15090") || !strings.Contains(got, "--proxy-uid=1337") {
		t.Errorf("capture args = %s", got)
	}
	var certVolume *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.Name == CertVolume {
			certVolume = &pod.Spec.Volumes[i]
		}
	}
	if certVolume == nil || certVolume.Secret.SecretName != "meshtls-web-tls" || !*certVolume.Secret.Optional {
		t.Errorf("certificate volume = %+v, want optional secret meshtls-web-tls", certVolume)
	}

	app := pod.Spec.Containers[0]
	if h := app.LivenessProbe.HTTPGet; h == nil || h.Port.IntValue() != HealthPort || h.Path != "/app-health/app/liveness" || app.LivenessProbe.PeriodSeconds != 7 {
		t.Errorf("liveness probe not rewritten to the health port: %+v", app.LivenessProbe)
	}
	if app.ReadinessProbe.TCPSocket != nil || app.ReadinessProbe.HTTPGet.Path != "/app-health/app/readiness" {
		t.Errorf("TCP readiness probe not rewritten: %+v", app.ReadinessProbe)
	}
	if app.StartupProbe.Exec == nil {
		t.Error("an exec probe must be left alone")
	}
	var originals map[string]corev1.Probe
	if err := json.Unmarshal([]byte(pod.Annotations[AnnotationOriginalProbes]), &originals); err != nil {
		t.Fatal(err)
	}
	if originals["app/liveness"].HTTPGet.Path != "/live" || originals["app/readiness"].TCPSocket == nil {
		t.Errorf("original probes not kept: %v", originals)
	}

	again := pod.DeepCopy()
	if err := Inject(again, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(pod, again) {
		t.Error("injecting an injected pod changed it")
	}
}

func TestInjectRefusals(t *testing.T) {
	for name, mutate := range map[string]func(*corev1.Pod){
		"a container named like the capture step": func(p *corev1.Pod) { p.Spec.Containers[0].Name = CaptureContainer },
		"a reserved volume name":                  func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: CertVolume}} },
		"a bad exclusion annotation":              func(p *corev1.Pod) { p.Annotations[AnnotationExcludeInboundPorts] = "80,http" },
	} {
		t.Run(name, func(t *testing.T) {
			pod := appPod()
			mutate(pod)
			if err := Inject(pod, DefaultConfig()); err == nil {
				t.Error("want an error")
			}
		})
	}
	if Skip(&corev1.Pod{Spec: corev1.PodSpec{HostNetwork: true}}) == "" {
		t.Error("host-network pods must be skipped")
	}
}

func TestResources(t *testing.T) {
	r, err := Resources("100m", "64Mi", "", "256Mi")
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests.Cpu().String() != "100m" || r.Requests.Memory().String() != "64Mi" || r.Limits.Memory().String() != "256Mi" {
		t.Errorf("resources = %+v", r)
	}
	if _, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Error("an empty CPU limit must set none")
	}
	if _, err := Resources("lots", "", "", ""); err == nil || !strings.Contains(err.Error(), "--proxy-cpu-request") {
		t.Errorf("want an error naming the flag, got %v", err)
	}
}

package inject

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/internal/capture"
	"github.com/meshtls/meshtls-operator/internal/proxy"
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

// The capture step's arguments, what the step makes of them, and its privileges.
func TestCaptureContainer(t *testing.T) {
	for name, tc := range map[string]struct {
		annotations map[string]string
		mutate      func(*corev1.Pod)
		wantArgs    string
		wantErr     string
	}{
		"no annotations": {
			wantArgs: "capture --inbound-port=15006 --outbound-port=15001 --proxy-uid=1337 --exclude-inbound-ports=15021,15090",
		},
		"every exclusion": {
			annotations: map[string]string{
				AnnotationExcludeInboundPorts:  "9000, 8081",
				AnnotationExcludeOutboundPorts: "5432,443",
				AnnotationExcludeOutboundCIDRs: " 10.0.0.0/8, 169.254.169.254,fd00::/8,10.0.0.0/8",
			},
			wantArgs: "capture --inbound-port=15006 --outbound-port=15001 --proxy-uid=1337 --exclude-inbound-ports=8081,9000,15021,15090 --exclude-outbound-ports=443,5432 --exclude-outbound-ip-ranges=10.0.0.0/8,169.254.169.254/32,fd00::/8",
		},
		"bad range": {
			annotations: map[string]string{AnnotationExcludeOutboundCIDRs: "10.0.0.0/8,10.1.2.3/16"},
			wantErr:     `metadata.annotations[meshtls.io/exclude-outbound-ip-ranges]: "10.1.2.3/16" has host bits set; did you mean 10.1.0.0/16?`,
		},
		"not a range": {
			annotations: map[string]string{AnnotationExcludeOutboundCIDRs: "internal.example.com"},
			wantErr:     `metadata.annotations[meshtls.io/exclude-outbound-ip-ranges]: "internal.example.com" is not a CIDR or an IP address`,
		},
		"bad outbound port": {
			annotations: map[string]string{AnnotationExcludeOutboundPorts: "5432,99999"},
			wantErr:     "metadata.annotations[meshtls.io/exclude-outbound-ports]",
		},
		"application runs as the proxy's user": {
			mutate: func(p *corev1.Pod) {
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](1337)}
			},
			wantErr: "spec.containers[app].securityContext.runAsUser: 1337 is the meshtls proxy's user ID",
		},
		"pod runs as the proxy's user": {
			mutate: func(p *corev1.Pod) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1337)}
			},
			wantErr: "spec.securityContext.runAsUser: 1337 is the meshtls proxy's user ID",
		},
		"application runs as another user": {
			mutate: func(p *corev1.Pod) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000)}
			},
			wantArgs: "capture --inbound-port=15006 --outbound-port=15001 --proxy-uid=1337 --exclude-inbound-ports=15021,15090",
		},
	} {
		t.Run(name, func(t *testing.T) {
			pod := appPod()
			pod.Annotations = tc.annotations
			if tc.mutate != nil {
				tc.mutate(pod)
			}
			c, err := captureContainer(pod, DefaultConfig())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(c.Args, " "); got != tc.wantArgs {
				t.Errorf("args = %s\nwant   %s", got, tc.wantArgs)
			}
			// The step itself accepts what the injector passes.
			if _, _, err := capture.ParseArgs(c.Args[1:]); err != nil {
				t.Errorf("the capture step refuses the injected arguments: %v", err)
			}
			sc := c.SecurityContext
			if sc == nil || *sc.RunAsUser != 0 || *sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem {
				t.Fatalf("security context = %+v, want root, no privilege escalation, read-only root", sc)
			}
			if caps := sc.Capabilities; caps == nil || len(caps.Drop) != 1 || caps.Drop[0] != "ALL" || len(caps.Add) != 1 || caps.Add[0] != "NET_ADMIN" {
				t.Errorf("capabilities = %+v, want all dropped but NET_ADMIN (netlink needs no NET_RAW)", caps)
			}
			if c.Image != DefaultConfig().ProxyImage || c.Name != CaptureContainer {
				t.Errorf("container %s runs %s, want %s from the proxy image", c.Name, c.Image, CaptureContainer)
			}
		})
	}
}

// TestProxyContainerContract checks what the proxy (internal/proxy, cmd/proxy)
// relies on: its readiness path, the original probes with named ports resolved, and
// the cluster CA beside the pod-bound token.
func TestProxyContainerContract(t *testing.T) {
	pod := appPod()
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	pod.Spec.Containers[0].LivenessProbe.HTTPGet.Port = intstr.FromString("http")
	if err := Inject(pod, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.InitContainers[1]
	if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != "/readyz" || p.Port.IntValue() != HealthPort {
		t.Errorf("the proxy serves /readyz on %d, the readiness probe is %+v", HealthPort, c.ReadinessProbe)
	}
	var env string
	for _, e := range c.Env {
		if e.Name == "MESHTLS_ORIGINAL_PROBES" {
			env = e.Value
		}
	}
	probes, err := proxy.ParseProbes(env)
	if err != nil {
		t.Fatalf("the proxy refuses MESHTLS_ORIGINAL_PROBES %q: %v", env, err)
	}
	if p := probes["app/liveness"]; p.HTTPGet == nil || p.HTTPGet.Port.Number != 8080 || p.HTTPGet.Path != "/live" {
		t.Errorf("want the liveness probe with its named port resolved to 8080, got %s", env)
	}
	if p := probes["app/readiness"]; p.TCPSocket == nil || p.TCPSocket.Port.Number != 8080 {
		t.Errorf("want the TCP readiness probe, got %s", env)
	}
	if _, ok := probes["app/startup"]; ok {
		t.Error("an exec probe is not the proxy's to run")
	}
	var ca bool
	for _, v := range pod.Spec.Volumes {
		if v.Name == TokenVolume {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil && s.ConfigMap.Name == "kube-root-ca.crt" && len(s.ConfigMap.Items) == 1 && s.ConfigMap.Items[0].Path == "ca.crt" {
					ca = true
				}
			}
		}
	}
	if !ca {
		t.Error("the token volume must carry the cluster CA as ca.crt (the kube-root-ca.crt ConfigMap)")
	}
}

package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func injected(t *testing.T) *corev1.Pod {
	t.Helper()
	pod := appPod()
	if err := Inject(pod, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return pod
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*corev1.Pod)
		wantErr string // "" means accepted unchanged
	}{
		{"should accept exactly what injection produced (a reinvocation)", func(*corev1.Pod) {}, ""},
		{"should accept a volume mount a later admission plugin added to the proxy", func(p *corev1.Pod) {
			p.Spec.InitContainers[1].VolumeMounts = append(p.Spec.InitContainers[1].VolumeMounts, corev1.VolumeMount{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true})
		}, ""},
		{"should refuse a volume mounted over the proxy's binary", func(p *corev1.Pod) {
			p.Spec.InitContainers[1].VolumeMounts = append(p.Spec.InitContainers[1].VolumeMounts, corev1.VolumeMount{Name: "evil", MountPath: "/meshtls-proxy", SubPath: "noop"})
		}, "differs"},
		{"should refuse a writable mount passed off as the ServiceAccount token", func(p *corev1.Pod) {
			p.Spec.InitContainers[1].VolumeMounts = append(p.Spec.InitContainers[1].VolumeMounts, corev1.VolumeMount{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"})
		}, "differs"},
		{"should accept the API server's defaults filled into what injection produced", func(p *corev1.Pod) {
			for i := range p.Spec.InitContainers {
				defaultContainer(&p.Spec.InitContainers[i])
			}
			for i := range p.Spec.Volumes {
				defaultVolume(&p.Spec.Volumes[i])
			}
		}, ""},
		{"should refuse a proxy container whose command overrides the image's entry point", func(p *corev1.Pod) {
			p.Spec.InitContainers[1].Command = []string{"/bin/sh", "-c", "exec nc -l 15006"}
		}, "differs"},
		{"should refuse a proxy container with another image", func(p *corev1.Pod) {
			p.Spec.InitContainers[1].Image = "evil/proxy:1"
		}, "spec.initContainers[meshtls-proxy]: differs"},
		{"should refuse a proxy container with an extra environment variable", func(p *corev1.Pod) {
			p.Spec.InitContainers[1].Env = append(p.Spec.InitContainers[1].Env, corev1.EnvVar{Name: "MESHTLS_INSECURE", Value: "1"})
		}, "differs"},
		{"should refuse a capture step with other arguments", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Args = []string{"capture", "--dry-run"}
		}, "spec.initContainers[meshtls-init]: differs"},
		{"should refuse a pod that carries only the proxy", func(p *corev1.Pod) {
			p.Spec.InitContainers = p.Spec.InitContainers[1:]
		}, "only part of meshtls injection"},
		{"should refuse an ordinary container named meshtls-proxy", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainer, Image: "x"})
		}, "spec.containers"},
		{"should refuse probes that do not match the original-probes annotation", func(p *corev1.Pod) {
			p.Annotations[AnnotationOriginalProbes] = `{"app/liveness":{"exec":{"command":["true"]}}}`
		}, ""}, // decided below: the proxy env carries the probes, so the mismatch surfaces either way
		{"should refuse a changed meshtls volume", func(p *corev1.Pod) {
			for i := range p.Spec.Volumes {
				if p.Spec.Volumes[i].Name == CertVolume {
					p.Spec.Volumes[i].Secret.SecretName = "someone-elses-key"
				}
			}
		}, "spec.volumes[meshtls-certs]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := injected(t)
			tt.mutate(pod)
			before := pod.DeepCopy()
			err := Inject(pod, DefaultConfig())
			if strings.Contains(tt.name, "original-probes") {
				if err == nil {
					t.Fatal("a forged original-probes annotation on an injected pod must be refused")
				}
				return
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("want accepted, got %v", err)
				}
				if len(pod.Spec.InitContainers) != len(before.Spec.InitContainers) {
					t.Fatal("an injected pod must not be injected twice")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("want an error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestUserSetOriginalProbesAreDropped(t *testing.T) {
	pod := appPod()
	pod.Spec.Containers[0].LivenessProbe, pod.Spec.Containers[0].ReadinessProbe = nil, nil
	pod.Annotations[AnnotationOriginalProbes] = `{"app/liveness":{"httpGet":{"host":"169.254.169.254","path":"/","port":80}}}`
	if err := Inject(pod, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if v, ok := pod.Annotations[AnnotationOriginalProbes]; ok {
		t.Errorf("a user-set %s must be removed when injection rewrote no probe, got %q", AnnotationOriginalProbes, v)
	}
}

func TestValidateAnnotations(t *testing.T) {
	pod := appPod()
	pod.Annotations[AnnotationExcludeOutboundCIDRs] = "10.0.0.0/8, 10.0.0.300/8"
	pod.Annotations[AnnotationExcludeOutboundPorts] = "53,http"
	got := ValidateAnnotations(pod).ToAggregate()
	if got == nil || !strings.Contains(got.Error(), `"10.0.0.300/8" is not a CIDR`) || !strings.Contains(got.Error(), `"http" is not a port number`) ||
		!strings.Contains(got.Error(), "metadata.annotations[meshtls.io/exclude-outbound-ip-ranges]") {
		t.Errorf("want both annotations refused with their field, got %v", got)
	}
	if errs := ValidateAnnotations(appPod()); len(errs) > 0 {
		t.Errorf("valid annotations refused: %v", errs)
	}
}

func TestValidateEscapes(t *testing.T) {
	pod := appPod()
	privileged, root := true, int64(0)
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &privileged, RunAsUser: &root,
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE", "CAP_NET_ADMIN"}}}
	got := ValidateEscapes(pod).ToAggregate()
	if got == nil || !strings.Contains(got.Error(), "spec.containers[0].securityContext.privileged") ||
		!strings.Contains(got.Error(), "spec.containers[0].securityContext.capabilities.add[1]") || strings.Contains(got.Error(), "add[0]") {
		t.Errorf("want privileged and NET_ADMIN refused with their fields (NET_BIND_SERVICE allowed), got %v", got)
	}
	injectedPod := injected(t)
	if errs := ValidateEscapes(injectedPod); len(errs) > 0 {
		t.Errorf("the capture step's own NET_ADMIN must not count: %v", errs)
	}
}

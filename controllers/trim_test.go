package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

func TestTrimPodKeepsWhatTheResolverReads(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "shop", UID: "u", Labels: map[string]string{"app": "x"},
			Annotations: map[string]string{policy.AnnotationExcludeInboundPorts: "8081", "other": "dropped"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "sa", HostNetwork: true,
			InitContainers: []corev1.Container{{Name: "meshtls-init"}, {Name: policy.ProxyContainerName, Ports: []corev1.ContainerPort{{ContainerPort: 15090}}}},
			Containers: []corev1.Container{
				{Name: "app", Image: "big", Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
				{Name: "side", Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {ContainerPort: 9090}}},
			},
		},
	}
	out, err := TrimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*PodSummary)
	if s.Name != "a" || s.Namespace != "shop" || s.UID != "u" || s.Labels["app"] != "x" {
		t.Errorf("the summary lacks the metadata the informer keys by: %+v", s.ObjectMeta)
	}
	if again, _ := TrimPod(out); again != out {
		t.Error("a second pass must leave a summary as it is")
	}
	if got, want := s.Pod, policy.PodFrom(pod); !got.Equal(want) {
		t.Errorf("the resolver reads another pod from the cache:\n got %+v\nwant %+v", got, want)
	}
}

func TestTrimProxyConfigEmptiesAHashThatDoesNotMatch(t *testing.T) {
	spec := v1alpha1.PodProxyConfigSpec{PodUID: "u", Identity: "spiffe://cluster.local/ns/shop/sa/a", Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict}}
	spec.ConfigHash = policy.ConfigHash(spec)
	spec.Sidecar = v1alpha1.SidecarInjected
	ppc := &v1alpha1.PodProxyConfig{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: spec}

	out, _ := TrimProxyConfig(ppc.DeepCopy())
	kept := out.(*v1alpha1.PodProxyConfig).Spec
	if kept.ConfigHash != spec.ConfigHash || kept.Sidecar != spec.Sidecar || len(kept.Decision) != 0 {
		t.Errorf("a consistent object keeps its hash and observations, drops the rest; got %+v", kept)
	}
	if !sameSpec(kept, spec) {
		t.Error("the trimmed copy must compare equal to what the operator wants")
	}
	again, _ := TrimProxyConfig(out)
	if got := again.(*v1alpha1.PodProxyConfig).Spec; got.ConfigHash != spec.ConfigHash {
		t.Errorf("a second pass (client-go may transform a stored object again) must keep the hash, got %q", got.ConfigHash)
	}

	edited := ppc.DeepCopy()
	edited.Spec.Inbound.Mode = v1alpha1.ModeDisable // by hand, keeping the hash
	out, _ = TrimProxyConfig(edited)
	if got := out.(*v1alpha1.PodProxyConfig).Spec; got.ConfigHash != "" || sameSpec(got, spec) {
		t.Errorf("a hand edit that kept the hash must not pass for the operator's spec; got %+v", got)
	}
	forged := ppc.DeepCopy()
	forged.Annotations = map[string]string{trimmedAnnotation: ""}
	forged.Spec.Inbound.Mode = v1alpha1.ModeDisable // a hand edit that kept the hash
	out, _ = TrimProxyConfig(forged)
	if got := out.(*v1alpha1.PodProxyConfig).Spec; got.ConfigHash != "" {
		t.Error("an object from the API carrying the marker's name must still be checked")
	}
	if !equality.Semantic.DeepEqual(ppc.Spec, spec) {
		t.Error("the transform must not change its input's spec")
	}
}

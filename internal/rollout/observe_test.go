package rollout

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func TestPodFrom(t *testing.T) {
	ready := []metav1.Condition{{Type: v1alpha1.ConditionCertificateReady, Status: metav1.ConditionTrue, Reason: "Loaded"}}
	base := func(mutate ...func(*v1alpha1.PodProxyConfig)) *v1alpha1.PodProxyConfig {
		ppc := &v1alpha1.PodProxyConfig{
			Spec: v1alpha1.PodProxyConfigSpec{
				PodUID: "uid-1", ConfigHash: "sha256:aa", CertificateSecretName: "meshtls-app-tls", Sidecar: v1alpha1.SidecarInjected,
				Decision:    []v1alpha1.Decision{{Scope: v1alpha1.ScopeNamespace, Mode: v1alpha1.ModePermissive}},
				Certificate: &v1alpha1.CertificateState{Name: "meshtls-app", Ready: true},
			},
			Status: v1alpha1.PodProxyConfigStatus{AppliedHash: "sha256:aa", Conditions: ready},
		}
		for _, m := range mutate {
			m(ppc)
		}
		return ppc
	}
	render := func(p Pod) string {
		return fmt.Sprintf("config=%t sidecarMissing=%t applied=%t workload=%t ns=%s cert=%t(%s) plaintext=%s rejected=%d",
			p.Config, p.SidecarMissing, p.Applied, p.WorkloadDecides, p.NamespaceMode, p.CertificateReady, p.CertificateReason,
			p.LastPlaintext.Format(time.TimeOnly), p.RejectedPlaintext)
	}
	tests := []struct {
		name string
		ppc  *v1alpha1.PodProxyConfig
		want string
	}{
		{"should read a pod without a PodProxyConfig as having none",
			nil, "config=false sidecarMissing=false applied=false workload=false ns=UNSET cert=false() plaintext=00:00:00 rejected=0"},
		{"should ignore a PodProxyConfig left by an older pod of the same name",
			base(func(p *v1alpha1.PodProxyConfig) { p.Spec.PodUID = "uid-0" }),
			"config=false sidecarMissing=false applied=false workload=false ns=UNSET cert=false() plaintext=00:00:00 rejected=0"},
		{"should read an applied configuration with a ready certificate",
			base(), "config=true sidecarMissing=false applied=true workload=false ns=PERMISSIVE cert=true() plaintext=00:00:00 rejected=0"},
		{"should read a proxy that reports another hash as not applied",
			base(func(p *v1alpha1.PodProxyConfig) { p.Status.AppliedHash = "sha256:old" }),
			"config=true sidecarMissing=false applied=false workload=false ns=PERMISSIVE cert=true() plaintext=00:00:00 rejected=0"},
		{"should read a proxy that reports nothing as not applied, without a certificate",
			base(func(p *v1alpha1.PodProxyConfig) { p.Status = v1alpha1.PodProxyConfigStatus{} }),
			"config=true sidecarMissing=false applied=false workload=false ns=PERMISSIVE cert=false(the proxy reports no certificate) plaintext=00:00:00 rejected=0"},
		{"should read a pod without a sidecar",
			base(func(p *v1alpha1.PodProxyConfig) { p.Spec.Sidecar = v1alpha1.SidecarMissing }),
			"config=true sidecarMissing=true applied=true workload=false ns=PERMISSIVE cert=true() plaintext=00:00:00 rejected=0"},
		{"should see that a workload policy's mode decides the pod",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Spec.Decision = []v1alpha1.Decision{{Scope: v1alpha1.ScopeWorkload, Mode: v1alpha1.ModeStrict}, {Scope: v1alpha1.ScopeMinimumMode, Mode: v1alpha1.ModeStrict}}
			}),
			"config=true sidecarMissing=false applied=true workload=true ns=UNSET cert=true() plaintext=00:00:00 rejected=0"},
		{"should see the namespace decide when the workload policy sets only ports",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Spec.Decision = []v1alpha1.Decision{{Scope: v1alpha1.ScopeWorkload, Mode: v1alpha1.ModeUnset, Ports: []int32{8080}}, {Scope: v1alpha1.ScopeNamespace, Mode: v1alpha1.ModeStrict}}
			}),
			"config=true sidecarMissing=false applied=true workload=false ns=STRICT cert=true() plaintext=00:00:00 rejected=0"},
		{"should read a configuration the mesh decided as following an UNSET namespace",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Spec.Decision = []v1alpha1.Decision{{Scope: v1alpha1.ScopeMesh, Mode: v1alpha1.ModePermissive}}
			}),
			"config=true sidecarMissing=false applied=true workload=false ns=UNSET cert=true() plaintext=00:00:00 rejected=0"},
		{"should not count a certificate the operator does not report Ready, and say cert-manager's reason",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Spec.Certificate = &v1alpha1.CertificateState{Name: "meshtls-app", Reason: "Issuing"}
			}),
			"config=true sidecarMissing=false applied=true workload=false ns=PERMISSIVE cert=false(Certificate meshtls-app not Ready: Issuing) plaintext=00:00:00 rejected=0"},
		{"should not count a certificate the proxy does not hold",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionCertificateReady, Status: metav1.ConditionFalse, Reason: "NotLoaded"}}
			}),
			"config=true sidecarMissing=false applied=true workload=false ns=PERMISSIVE cert=false(proxy: NotLoaded) plaintext=00:00:00 rejected=0"},
		{"should say when the mesh has no issuer",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Spec.CertificateSecretName, p.Spec.Certificate, p.Status.Conditions = "", nil, nil
			}),
			"config=true sidecarMissing=false applied=true workload=false ns=PERMISSIVE cert=false(the mesh has no issuer) plaintext=00:00:00 rejected=0"},
		{"should read the last plaintext time and the rejected counter",
			base(func(p *v1alpha1.PodProxyConfig) {
				p.Status.LastPlaintextTime = &metav1.Time{Time: time.Date(2026, 1, 1, 17, 59, 0, 0, time.UTC)}
				p.Status.Connections = &v1alpha1.ConnectionCounts{RejectedPlaintext: 4, Plaintext: 9}
			}),
			"config=true sidecarMissing=false applied=true workload=false ns=PERMISSIVE cert=true() plaintext=17:59:00 rejected=4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(PodFrom("web-0", "uid-1", tt.ppc)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 1400 * time.Millisecond: "1s", 59 * time.Second: "59s", time.Minute: "1m", 150 * time.Second: "2m30s",
		time.Hour: "1h", 95 * time.Minute: "1h35m", -time.Second: "0s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%s) = %s, want %s", d, got, want)
		}
	}
}

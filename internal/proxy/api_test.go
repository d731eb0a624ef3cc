package proxy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// The proxy's JSON structs (api.go) are a slice of api/v1alpha1, kept apart so the
// sidecar does not link the API machinery. These tests hold them to the real types.

func strictDecode(t *testing.T, b []byte, into any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%s does not decode into %T: %v", b, into, err)
	}
}

func TestAPIMirrorReadsWhatTheOperatorWrites(t *testing.T) {
	full := &v1alpha1.PodProxyConfig{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.meshtls.io/v1alpha1", Kind: "PodProxyConfig"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "u-1", ResourceVersion: "42", Generation: 7},
		Spec: v1alpha1.PodProxyConfigSpec{
			PodUID: "p-1", ServiceAccountName: "web", Identity: serverID,
			CertificateSecretName: "meshtls-web-tls", TrustBundleConfigMapName: "meshtls-trust-bundle",
			Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict,
				Ports: []v1alpha1.PortMTLS{{Port: 8080, Mode: v1alpha1.ModeDisable}, {Port: 9090, Mode: v1alpha1.ModePermissive}}, UncapturedPorts: []int32{8081}},
			Decision:    []v1alpha1.Decision{{Scope: v1alpha1.ScopeNamespace, Kind: "NamespaceMTLSPolicy", Name: "default", Mode: v1alpha1.ModeStrict}},
			ConfigHash:  "sha256:abc",
			Sidecar:     v1alpha1.SidecarInjected,
			Certificate: &v1alpha1.CertificateState{Name: "meshtls-web", Ready: true},
		},
	}
	b, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var got PodProxyConfig
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := PodProxyConfig{
		APIVersion: "security.meshtls.io/v1alpha1", Kind: "PodProxyConfig",
		Metadata: ObjectMeta{Name: "web-0", Namespace: "shop", UID: "u-1", ResourceVersion: "42", Generation: 7},
		Spec: PodProxyConfigSpec{PodUID: "p-1", Identity: serverID, CertificateSecretName: "meshtls-web-tls",
			Inbound:    InboundConfig{Mode: ModeStrict, Ports: []PortMTLS{{Port: 8080, Mode: ModeDisable}, {Port: 9090, Mode: ModePermissive}}},
			ConfigHash: "sha256:abc"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read\n%+v\nwant\n%+v", got, want)
	}
	// Every field the proxy declares exists in the API.
	mine, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	strictDecode(t, mine, &v1alpha1.PodProxyConfig{})
}

func TestAPIMirrorWritesWhatTheAPIAccepts(t *testing.T) {
	now := time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)
	st := PodProxyConfigStatus{
		AppliedHash: "sha256:abc",
		Conditions: []Condition{{Type: ConditionApplied, Status: ConditionTrue, ObservedGeneration: 7, LastTransitionTime: Time{now}, Reason: "Applied", Message: "m"},
			{Type: ConditionCertificateReady, Status: ConditionFalse, LastTransitionTime: Time{now}, Reason: "NoCertificate", Message: "n"}},
		Connections:       &ConnectionCounts{MTLS: 1, Plaintext: 2, RejectedPlaintext: 3, HandshakeFailures: 4},
		LastPlaintextTime: &Time{now},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var api v1alpha1.PodProxyConfigStatus
	strictDecode(t, b, &api)
	t0 := metav1.NewTime(now)
	want := v1alpha1.PodProxyConfigStatus{
		AppliedHash: "sha256:abc",
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionApplied, Status: metav1.ConditionTrue, ObservedGeneration: 7, LastTransitionTime: t0, Reason: "Applied", Message: "m"},
			{Type: v1alpha1.ConditionCertificateReady, Status: metav1.ConditionFalse, LastTransitionTime: t0, Reason: "NoCertificate", Message: "n"}},
		Connections:       &v1alpha1.ConnectionCounts{MTLS: 1, Plaintext: 2, RejectedPlaintext: 3, HandshakeFailures: 4},
		LastPlaintextTime: &t0,
	}
	if !reflect.DeepEqual(normalize(api), normalize(want)) {
		t.Fatalf("wrote\n%+v\nwant\n%+v", api, want)
	}
	// And the API's own encoding of it reads back the same.
	back, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var again PodProxyConfigStatus
	strictDecode(t, back, &again)
	if again.LastPlaintextTime.Unix() != now.Unix() || *again.Connections != *st.Connections || len(again.Conditions) != 2 {
		t.Fatalf("read back %+v", again)
	}
}

func normalize(s v1alpha1.PodProxyConfigStatus) v1alpha1.PodProxyConfigStatus {
	for i := range s.Conditions {
		s.Conditions[i].LastTransitionTime = metav1.NewTime(s.Conditions[i].LastTransitionTime.UTC())
	}
	if s.LastPlaintextTime != nil {
		t := metav1.NewTime(s.LastPlaintextTime.UTC())
		s.LastPlaintextTime = &t
	}
	return s
}

func TestAPIMirrorConstants(t *testing.T) {
	for mine, theirs := range map[string]string{
		string(ModeStrict): string(v1alpha1.ModeStrict), string(ModePermissive): string(v1alpha1.ModePermissive),
		string(ModeDisable): string(v1alpha1.ModeDisable), ConditionApplied: v1alpha1.ConditionApplied,
		ConditionCertificateReady: v1alpha1.ConditionCertificateReady, ConditionTrue: string(metav1.ConditionTrue),
		ConditionFalse: string(metav1.ConditionFalse),
	} {
		if mine != theirs {
			t.Errorf("proxy says %q, the API %q", mine, theirs)
		}
	}
}

package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// celNamespace holds the namespaced objects of the validation table.
const celNamespace = "cel"

// object builds an object of the security.meshtls.io API from a YAML body (kind,
// metadata and spec).
func object(t *testing.T, body string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte("apiVersion: security.meshtls.io/v1alpha1\n"+body), &obj.Object); err != nil {
		t.Fatalf("bad test object: %v\n%s", err, body)
	}
	if obj.GetKind() != "MeshMTLSPolicy" && obj.GetKind() != "MTLSRollout" && obj.GetNamespace() == "" {
		obj.SetNamespace(celNamespace)
	}
	return obj
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient().Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("failed to create namespace %s: %v", name, err)
	}
}

// TestSchemaValidation creates each object against the real API server, with the
// webhooks off: every rule here holds in the CRD schema alone. A row with no
// wantErrors must be accepted; otherwise the refusal must contain every wanted
// fragment, so that a message that stops naming its field fails the test.
func TestSchemaValidation(t *testing.T) {
	ensureNamespace(t, celNamespace)
	mesh := func(name, spec string) string {
		return fmt.Sprintf("kind: MeshMTLSPolicy\nmetadata: {name: %s}\nspec:\n  issuerRef: {name: mesh-ca}\n%s", name, spec)
	}
	wmp := func(name, spec string) string {
		return fmt.Sprintf("kind: WorkloadMTLSPolicy\nmetadata: {name: %s}\nspec:\n%s", name, spec)
	}
	rollout := func(name, spec string) string {
		return fmt.Sprintf("kind: MTLSRollout\nmetadata: {name: %s}\nspec:\n  namespaceSelector: {matchLabels: {team: shop}}\n%s", name, spec)
	}

	tests := []struct {
		name       string
		body       string
		wantErrors []string
	}{
		// MeshMTLSPolicy
		{"a MeshMTLSPolicy named default is accepted", mesh("default", ""), nil},
		{"a MeshMTLSPolicy not named default is refused", mesh("mesh", ""),
			[]string{"metadata.name must be 'default'"}},
		{"a mesh mode below the mesh's own minimumMode is refused", mesh("default", "  mode: PERMISSIVE\n  minimumMode: STRICT"),
			[]string{"spec.mode", "PERMISSIVE is weaker than spec.minimumMode STRICT"}},
		{"a mesh mode DISABLE under a PERMISSIVE floor is refused", mesh("default", "  mode: DISABLE\n  minimumMode: PERMISSIVE"),
			[]string{"spec.mode", "DISABLE is weaker than spec.minimumMode PERMISSIVE"}},
		{"a lower-case mesh mode is refused", mesh("default", "  mode: strict"),
			[]string{"spec.mode", `Unsupported value: "strict"`}},
		{"UNSET is not a mesh mode", mesh("default", "  mode: UNSET"),
			[]string{"spec.mode", `Unsupported value: "UNSET"`}},
		{"a minimumMode outside the enum is refused", mesh("default", "  minimumMode: HIGH"),
			[]string{"spec.minimumMode", `Unsupported value: "HIGH"`}},
		{"renewBefore equal to duration is refused", mesh("default", "  certificate: {duration: 8h, renewBefore: 8h}"),
			[]string{"spec.certificate.renewBefore", "must be shorter than spec.certificate.duration"}},
		{"renewBefore longer than duration is refused", mesh("default", "  certificate: {duration: 1h, renewBefore: 90m}"),
			[]string{"spec.certificate.renewBefore", "must be shorter than spec.certificate.duration"}},
		{"a duration that is not a Go duration is refused", mesh("default", "  certificate: {duration: 1 day}"),
			[]string{"spec.certificate.duration"}},
		{"a trust domain with a slash is refused", mesh("default", "  trustDomain: cluster.local/prod"),
			[]string{"spec.trustDomain", "SPIFFE trust-domain syntax"}},
		{"a trust domain with upper case is refused", mesh("default", "  trustDomain: Cluster.Local"),
			[]string{"spec.trustDomain", "SPIFFE trust-domain syntax"}},
		{"a MeshMTLSPolicy without issuerRef is refused", "kind: MeshMTLSPolicy\nmetadata: {name: default}\nspec: {mode: STRICT}",
			[]string{"spec.issuerRef", "Required value"}},
		{"an ECDSA key of an RSA size is refused", mesh("default", "  certificate: {privateKey: {algorithm: ECDSA, size: 2048}}"),
			[]string{"spec.certificate.privateKey.size", "256, 384 or 521"}},
		{"an unknown key algorithm is refused", mesh("default", "  certificate: {privateKey: {algorithm: DSA}}"),
			[]string{"spec.certificate.privateKey.algorithm", `Unsupported value: "DSA"`}},

		// NamespaceMTLSPolicy
		{"a NamespaceMTLSPolicy named default is accepted", "kind: NamespaceMTLSPolicy\nmetadata: {name: default}\nspec: {mode: STRICT}", nil},
		{"a NamespaceMTLSPolicy not named default is refused", "kind: NamespaceMTLSPolicy\nmetadata: {name: strict}\nspec: {mode: STRICT}",
			[]string{"metadata.name must be 'default'"}},
		{"a lower-case namespace mode is refused", "kind: NamespaceMTLSPolicy\nmetadata: {name: default}\nspec: {mode: strict}",
			[]string{"spec.mode", `Unsupported value: "strict"`}},

		// WorkloadMTLSPolicy
		{"a WorkloadMTLSPolicy with a selector is accepted", wmp("by-label", "  selector: {matchLabels: {app: a}}\n  mode: STRICT"), nil},
		{"a WorkloadMTLSPolicy with a matchExpressions selector is accepted",
			wmp("by-expression", "  selector: {matchExpressions: [{key: app, operator: Exists}]}"), nil},
		{"a WorkloadMTLSPolicy attached to a Service is accepted",
			wmp("by-service", "  targetRefs: [{group: '', kind: Service, name: a}]\n  mode: STRICT"), nil},
		{"a WorkloadMTLSPolicy with both selector and targetRefs is refused",
			wmp("both", "  selector: {matchLabels: {app: a}}\n  targetRefs: [{group: '', kind: Service, name: a}]"),
			[]string{"exactly one of spec.selector and spec.targetRefs must be set"}},
		{"a WorkloadMTLSPolicy with neither selector nor targetRefs is refused", wmp("neither", "  mode: STRICT"),
			[]string{"exactly one of spec.selector and spec.targetRefs must be set"}},
		{"an empty selector is refused", wmp("empty", "  selector: {}"),
			[]string{"spec.selector", "may not be empty", "NamespaceMTLSPolicy"}},
		{"a selector with an unknown operator is refused", wmp("op", "  selector: {matchExpressions: [{key: app, operator: Matches, values: [a]}]}"),
			[]string{"spec.selector", "operator must be one of In, NotIn, Exists, DoesNotExist"}},
		{"a selector with In and no values is refused", wmp("in-empty", "  selector: {matchExpressions: [{key: app, operator: In}]}"),
			[]string{"spec.selector", "values must be non-empty when the operator is In or NotIn"}},
		{"a selector with Exists and values is refused", wmp("exists-values", "  selector: {matchExpressions: [{key: app, operator: Exists, values: [a]}]}"),
			[]string{"spec.selector", "values must be empty when the operator is Exists or DoesNotExist"}},
		{"a selector with 17 expressions is refused", wmp("many", "  selector: {matchExpressions: ["+strings.Repeat("{key: a, operator: Exists}, ", 16)+"{key: a, operator: Exists}]}"),
			[]string{"spec.selector", "at most 16 matchExpressions"}},
		{"an MTLSRollout with an empty namespaceSelector is refused", "kind: MTLSRollout\nmetadata: {name: everything}\nspec:\n  namespaceSelector: {}",
			[]string{"spec.namespaceSelector", "may not be empty", "kube-system"}},
		{"a selector with an empty matchLabels is refused", wmp("empty-labels", "  selector: {matchLabels: {}}"),
			[]string{"spec.selector", "may not be empty"}},
		{"empty targetRefs are refused", wmp("no-targets", "  targetRefs: []"),
			[]string{"spec.targetRefs"}},
		{"a targetRef to a Deployment is refused",
			wmp("deployment", "  targetRefs: [{group: apps, kind: Deployment, name: a}]"),
			[]string{"spec.targetRefs", "may name only core Services"}},
		{"a targetRef to a Service of another group is refused",
			wmp("other-group", "  targetRefs: [{group: example.com, kind: Service, name: a}]"),
			[]string{"spec.targetRefs", "may name only core Services"}},
		{"port 0 is refused", wmp("port-0", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 0, mode: STRICT}]"),
			[]string{"spec.portLevelMTLS[0].port", "greater than or equal to 1"}},
		{"port 70000 is refused", wmp("port-70000", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 70000, mode: STRICT}]"),
			[]string{"spec.portLevelMTLS[0].port", "less than or equal to 65535"}},
		{"a proxy port is refused", wmp("proxy-port", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 15006, mode: DISABLE}]"),
			[]string{"spec.portLevelMTLS[0].port", "proxy's own ports 15000-15099"}},
		{"the last proxy port is refused", wmp("proxy-port-last", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 15099, mode: DISABLE}]"),
			[]string{"spec.portLevelMTLS[0].port", "proxy's own ports"}},
		{"port 15100 is accepted", wmp("port-15100", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 15100, mode: DISABLE}]"), nil},
		{"the same port twice is refused",
			wmp("dup-port", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 8080, mode: STRICT}, {port: 8080, mode: DISABLE}]"),
			[]string{"spec.portLevelMTLS[1]", "Duplicate value"}},
		{"a port entry without a mode is refused", wmp("no-port-mode", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 8080}]"),
			[]string{"spec.portLevelMTLS[0].mode", "Required value"}},
		{"UNSET is not a port mode", wmp("unset-port-mode", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: [{port: 8080, mode: UNSET}]"),
			[]string{"spec.portLevelMTLS[0].mode", `Unsupported value: "UNSET"`}},
		{"a workload mode outside the enum is refused", wmp("bad-mode", "  selector: {matchLabels: {app: a}}\n  mode: MUTUAL"),
			[]string{"spec.mode", `Unsupported value: "MUTUAL"`}},
		{"more than 64 port entries are refused", wmp("too-many-ports", "  selector: {matchLabels: {app: a}}\n  portLevelMTLS: "+manyPorts(65)),
			[]string{"spec.portLevelMTLS", "must have at most 64 items"}},

		// MTLSRollout
		{"an MTLSRollout is accepted", rollout("shop", ""), nil},
		{"a rollout to a target other than STRICT is refused", rollout("to-permissive", "  targetMode: PERMISSIVE"),
			[]string{"spec.targetMode", `Unsupported value: "PERMISSIVE"`}},
		{"maxConcurrent 0 is refused", rollout("zero", "  maxConcurrent: 0"),
			[]string{"spec.maxConcurrent", "greater than or equal to 1"}},
		{"a rollout without a namespaceSelector is refused", "kind: MTLSRollout\nmetadata: {name: no-selector}\nspec: {}",
			[]string{"spec.namespaceSelector", "Required value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			obj := object(t, tt.body)
			err := k8sClient().Create(ctx, obj)
			if err == nil {
				t.Cleanup(func() { _ = k8sClient().Delete(context.Background(), obj) })
			}
			if len(tt.wantErrors) == 0 {
				if err != nil {
					t.Fatalf("want the object accepted, got: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want a refusal containing %q, the object was accepted", tt.wantErrors)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %T: %v", err, err)
			}
			for _, want := range tt.wantErrors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the refusal does not contain %q:\n%v", want, err)
				}
			}
		})
	}
}

func manyPorts(n int) string {
	entries := make([]string, n)
	for i := range entries {
		entries[i] = fmt.Sprintf("{port: %d, mode: STRICT}", 9000+i)
	}
	return "[" + strings.Join(entries, ", ") + "]"
}

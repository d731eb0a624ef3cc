// Package manifests checks what `make deploy` installs: it builds config/default with
// kustomize, as kubectl -k does, and checks the admission configuration a cluster
// administrator relies on.
package manifests

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

func build(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(testenv.RepoRoot(), dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return m
}

func find(t *testing.T, m resmap.ResMap, kind, name string) map[string]any {
	t.Helper()
	for _, r := range m.Resources() {
		if r.GetKind() == kind && r.GetName() == name {
			obj, err := r.Map()
			if err != nil {
				t.Fatal(err)
			}
			return obj
		}
	}
	t.Fatalf("config/default has no %s %s", kind, name)
	return nil
}

func TestDefaultDeployment(t *testing.T) {
	m := build(t, "config/default")

	injector := find(t, m, "MutatingWebhookConfiguration", "meshtls-injector")
	if got := injector["metadata"].(map[string]any)["annotations"].(map[string]any)["cert-manager.io/inject-ca-from"]; got != "meshtls-system/meshtls-webhook-ca" {
		t.Errorf("injector CA injection = %v", got)
	}
	hooks := injector["webhooks"].([]any)
	if len(hooks) != 2 {
		t.Fatalf("want two pod webhooks (by namespace label, by pod label), got %d", len(hooks))
	}
	for _, h := range hooks {
		w := h.(map[string]any)
		if w["failurePolicy"] != "Fail" || w["sideEffects"] != "None" || w["objectSelector"] == nil || w["namespaceSelector"] == nil {
			t.Errorf("webhook %v: want failurePolicy Fail, sideEffects None, an objectSelector and a namespaceSelector: %v", w["name"], w)
		}
		svc := w["clientConfig"].(map[string]any)["service"].(map[string]any)
		if svc["name"] != "meshtls-webhook" || svc["namespace"] != "meshtls-system" {
			t.Errorf("webhook %v calls %v", w["name"], svc)
		}
	}

	validation := find(t, m, "ValidatingWebhookConfiguration", "meshtls-policy-validation")
	for _, h := range validation["webhooks"].([]any) {
		w := h.(map[string]any)
		svc := w["clientConfig"].(map[string]any)["service"].(map[string]any)
		if w["failurePolicy"] != "Fail" || w["sideEffects"] != "None" || svc["name"] != "meshtls-webhook" {
			t.Errorf("validating webhook %v: %v", w["name"], w)
		}
	}

	find(t, m, "ValidatingAdmissionPolicy", "meshtls-podproxyconfig-guard")
	find(t, m, "ValidatingAdmissionPolicyBinding", "meshtls-podproxyconfig-guard")
	find(t, m, "Certificate", "meshtls-webhook")
	find(t, m, "Service", "meshtls-webhook")
	deploy := find(t, m, "Deployment", "meshtls-operator")
	if deploy["metadata"].(map[string]any)["namespace"] != "meshtls-system" {
		t.Errorf("the Deployment is not in meshtls-system")
	}
}

// TestPrometheus: the optional scrape configuration reaches what it should. The
// ServiceMonitor selects the manager's metrics Service by its labels and port name,
// that Service selects the manager's pods and their metrics port, and the PodMonitor
// names the port the injector gives the proxy.
func TestPrometheus(t *testing.T) {
	m := build(t, "config/prometheus")
	monitor := find(t, m, "ServiceMonitor", "meshtls-operator-metrics")
	pods := find(t, m, "PodMonitor", "meshtls-proxies")
	def := build(t, "config/default")
	svc := find(t, def, "Service", "meshtls-operator-metrics")
	deploy := find(t, def, "Deployment", "meshtls-operator")

	svcLabels := svc["metadata"].(map[string]any)["labels"].(map[string]any)
	for k, v := range monitor["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"].(map[string]any) {
		if svcLabels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%v, the metrics Service has %v", k, v, svcLabels)
		}
	}
	endpoint := monitor["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
	svcPort := svc["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)
	if endpoint["port"] != svcPort["name"] || endpoint["scheme"] != "https" {
		t.Errorf("ServiceMonitor endpoint %v does not match Service port %v", endpoint, svcPort)
	}
	podLabels := deploy["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
	for k, v := range svc["spec"].(map[string]any)["selector"].(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("the metrics Service selects %s=%v, the manager's pods have %v", k, v, podLabels)
		}
	}
	container := deploy["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	found := false
	for _, p := range container["ports"].([]any) {
		port := p.(map[string]any)
		if port["name"] == svcPort["targetPort"] && fmt.Sprint(port["containerPort"]) == fmt.Sprint(svcPort["port"]) {
			found = true
		}
	}
	if !found || !strings.Contains(fmt.Sprint(container["args"]), "--metrics-bind-address=:8443") || !strings.Contains(fmt.Sprint(container["args"]), "--metrics-secure") {
		t.Errorf("the metrics Service targets port %v, the manager serves %v with args %v", svcPort["targetPort"], container["ports"], container["args"])
	}

	// The proxies' port, as the injector names it.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	if err := inject.Inject(pod, inject.DefaultConfig()); err != nil {
		t.Fatalf("inject: %v", err)
	}
	endpointPort := pods["spec"].(map[string]any)["podMetricsEndpoints"].([]any)[0].(map[string]any)["port"]
	named := false
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, p := range c.Ports {
			if p.Name == endpointPort && p.ContainerPort == inject.MetricsPort {
				named = true
			}
		}
	}
	if !named {
		t.Errorf("the PodMonitor scrapes port %v, which the injected proxy does not name for %d", endpointPort, inject.MetricsPort)
	}

	// Commented out in config/default: installing the operator must not need the
	// Prometheus Operator's CRDs.
	for _, r := range def.Resources() {
		if r.GetKind() == "ServiceMonitor" || r.GetKind() == "PodMonitor" {
			t.Errorf("config/default installs a %s: it needs the Prometheus Operator, keep ../prometheus optional", r.GetKind())
		}
	}
}

// TestDefaultFollowsNamespace: with config/default's namespace changed, nothing in
// the install names meshtls-system any more: the guard admits the operator of the new
// namespace, the injection webhooks exclude it, and the webhook certificate is for the
// Service there.
func TestDefaultFollowsNamespace(t *testing.T) {
	const other = "mesh-ops"
	mem := filesys.MakeFsInMemory()
	root := testenv.RepoRoot()
	err := filepath.WalkDir(filepath.Join(root, "config"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == filepath.Join("config", "default", "kustomization.yaml") {
			b = []byte(strings.Replace(string(b), "\nnamespace: meshtls-system\n", "\nnamespace: "+other+"\n", 1))
		}
		return mem.WriteFile(filepath.Join("/", rel), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, "/config/default")
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "meshtls-system") {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "meshtls-system") {
				t.Errorf("config/default with namespace %s still says: %s", other, strings.TrimSpace(line))
			}
		}
	}
	for _, want := range []string{
		"'system:serviceaccount:" + other + ":meshtls-operator'",
		"meshtls-webhook." + other + ".svc",
		"cert-manager.io/inject-ca-from: " + other + "/meshtls-webhook-ca",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config/default with namespace %s does not say %s", other, want)
		}
	}
	injector := find(t, m, "MutatingWebhookConfiguration", "meshtls-injector")
	for _, h := range injector["webhooks"].([]any) {
		w := h.(map[string]any)
		if !strings.Contains(fmt.Sprint(w["namespaceSelector"]), other) {
			t.Errorf("webhook %v does not exclude the operator's namespace %s: %v", w["name"], other, w["namespaceSelector"])
		}
	}
}

// TestWebhookCertificateChain: the webhook configurations trust a CA, not the serving
// leaf, so a renewed leaf (new key) is trusted before the pods serve it and the old
// one after: self-signed Issuer -> CA Certificate -> CA Issuer -> leaf, and
// cainjector injects the CA Certificate. The CA keeps its key across renewals, so
// leaves it signed before stay trusted.
func TestWebhookCertificateChain(t *testing.T) {
	m := build(t, "config/default")
	str := func(obj map[string]any, path ...string) string {
		var cur any = obj
		for _, p := range path {
			next, ok := cur.(map[string]any)
			if !ok {
				return ""
			}
			cur = next[p]
		}
		return fmt.Sprint(cur)
	}
	leaf := find(t, m, "Certificate", "meshtls-webhook")
	if str(leaf, "spec", "isCA") == "true" || str(leaf, "spec", "issuerRef", "kind") != "Issuer" {
		t.Fatalf("the serving certificate must be a leaf from an Issuer: %v", leaf["spec"])
	}
	caIssuer := find(t, m, "Issuer", str(leaf, "spec", "issuerRef", "name"))
	caSecret := str(caIssuer, "spec", "ca", "secretName")
	var ca map[string]any
	for _, r := range m.Resources() {
		if obj, _ := r.Map(); r.GetKind() == "Certificate" && str(obj, "spec", "secretName") == caSecret {
			ca = obj
		}
	}
	if ca == nil {
		t.Fatalf("the serving certificate's Issuer %s is not a CA Issuer on a Certificate's Secret (spec.ca.secretName %q)", caIssuer["metadata"].(map[string]any)["name"], caSecret)
	}
	caName := str(ca, "metadata", "name")
	if str(ca, "spec", "isCA") != "true" || str(ca, "spec", "privateKey", "rotationPolicy") != "Never" {
		t.Errorf("Certificate %s: want isCA true and privateKey.rotationPolicy Never (leaves stay trusted across its renewals): %v", caName, ca["spec"])
	}
	if root := find(t, m, "Issuer", str(ca, "spec", "issuerRef", "name")); str(root, "spec", "selfSigned") == "" || str(root, "spec", "selfSigned") == "<nil>" {
		t.Errorf("the CA's Issuer is not self-signed: %v", root["spec"])
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, r := range m.Resources() {
			if r.GetKind() != kind {
				continue
			}
			if got, want := r.GetAnnotations()["cert-manager.io/inject-ca-from"], "meshtls-system/"+caName; got != want {
				t.Errorf("%s %s: cert-manager.io/inject-ca-from = %q, want the CA %q", kind, r.GetName(), got, want)
			}
		}
	}
}

// TestManagerHighAvailability: a drain never takes both manager replicas (the
// webhooks fail closed), and the scheduler spreads them over nodes where it can.
func TestManagerHighAvailability(t *testing.T) {
	m := build(t, "config/default")
	deploy := find(t, m, "Deployment", "meshtls-operator")
	spec := deploy["spec"].(map[string]any)
	podLabels := spec["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
	selects := func(what string, sel any) {
		t.Helper()
		ml, _ := sel.(map[string]any)["matchLabels"].(map[string]any)
		if len(ml) == 0 {
			t.Errorf("%s selects nothing: %v", what, sel)
		}
		for k, v := range ml {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%v, the manager's pods have %v", what, k, v, podLabels)
			}
		}
	}
	pdb := find(t, m, "PodDisruptionBudget", "meshtls-operator")
	if pdb["metadata"].(map[string]any)["namespace"] != "meshtls-system" {
		t.Errorf("the PodDisruptionBudget is not in the Deployment's namespace: %v", pdb["metadata"])
	}
	pdbSpec := pdb["spec"].(map[string]any)
	if fmt.Sprint(pdbSpec["minAvailable"]) != "1" || fmt.Sprint(spec["replicas"]) != "2" {
		t.Errorf("want minAvailable 1 of 2 replicas, got minAvailable %v of %v", pdbSpec["minAvailable"], spec["replicas"])
	}
	selects("the PodDisruptionBudget", pdbSpec["selector"])

	pod := spec["template"].(map[string]any)["spec"].(map[string]any)
	terms, _ := pod["affinity"].(map[string]any)["podAntiAffinity"].(map[string]any)["preferredDuringSchedulingIgnoredDuringExecution"].([]any)
	hostname := false
	for _, term := range terms {
		a := term.(map[string]any)["podAffinityTerm"].(map[string]any)
		if a["topologyKey"] == "kubernetes.io/hostname" {
			hostname = true
			selects("the pod anti-affinity", a["labelSelector"])
		}
	}
	if !hostname {
		t.Errorf("no preferred pod anti-affinity on kubernetes.io/hostname: %v", pod["affinity"])
	}
	for _, c := range pod["topologySpreadConstraints"].([]any) {
		c := c.(map[string]any)
		if c["whenUnsatisfiable"] != "ScheduleAnyway" {
			t.Errorf("topology spread %v: a hard constraint would leave a replica Pending on a one-zone cluster", c)
		}
		selects("the topology spread", c["labelSelector"])
	}
}

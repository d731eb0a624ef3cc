package manifests

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// A pod being created, as an admission webhook's selectors see it.
type podCreate struct {
	name      string
	namespace string
	nsLabels  map[string]string
	podLabels map[string]string
}

// Every pod create that a cluster sees, by the labels that matter to injection.
var podCreates = []podCreate{
	{name: "meshed namespace, plain pod", namespace: "shop", nsLabels: map[string]string{"meshtls.io/inject": "enabled"}},
	{name: "meshed namespace, opted-out pod", namespace: "shop", nsLabels: map[string]string{"meshtls.io/inject": "enabled"}, podLabels: map[string]string{"meshtls.io/inject": "disabled"}},
	{name: "meshed namespace, pod labelled too", namespace: "shop", nsLabels: map[string]string{"meshtls.io/inject": "enabled"}, podLabels: map[string]string{"meshtls.io/inject": "enabled"}},
	{name: "plain namespace, plain pod", namespace: "web"},
	{name: "plain namespace, labelled pod", namespace: "web", podLabels: map[string]string{"meshtls.io/inject": "enabled"}},
	{name: "kube-system pod", namespace: "kube-system"},
	{name: "kube-system pod, namespace labelled by mistake", namespace: "kube-system", nsLabels: map[string]string{"meshtls.io/inject": "enabled"}},
	{name: "kube-system pod labelled", namespace: "kube-system", podLabels: map[string]string{"meshtls.io/inject": "enabled"}},
	{name: "operator pod", namespace: "meshtls-system", podLabels: map[string]string{"control-plane": "meshtls-operator"}},
	{name: "operator namespace labelled by mistake", namespace: "meshtls-system", nsLabels: map[string]string{"meshtls.io/inject": "enabled"}, podLabels: map[string]string{"control-plane": "meshtls-operator"}},
	{name: "operator pod in a meshed namespace of its own choosing", namespace: "ops", nsLabels: map[string]string{"meshtls.io/inject": "enabled"}, podLabels: map[string]string{"control-plane": "meshtls-operator"}},
	{name: "operator pod labelled by mistake", namespace: "ops", podLabels: map[string]string{"control-plane": "meshtls-operator", "meshtls.io/inject": "enabled"}},
}

// webhooksCalled lists the webhooks (of a MutatingWebhookConfiguration's "webhooks"
// list) that the API server calls for a pod create, as it decides: rules, then
// namespaceSelector (absent: every namespace), then objectSelector (absent: every
// object).
func webhooksCalled(t *testing.T, hooks []any, p podCreate) []string {
	t.Helper()
	ns := labels.Set{"kubernetes.io/metadata.name": p.namespace}
	for k, v := range p.nsLabels {
		ns[k] = v
	}
	var called []string
	for _, h := range hooks {
		w := h.(map[string]any)
		if !coversPodCreate(w["rules"]) {
			continue
		}
		if matches(t, w["namespaceSelector"], ns) && matches(t, w["objectSelector"], labels.Set(p.podLabels)) {
			name, _ := w["name"].(string)
			if name == "" {
				name, _ = w["generateName"].(string)
			}
			called = append(called, name)
		}
	}
	sort.Strings(called)
	return called
}

func coversPodCreate(rules any) bool {
	list, _ := rules.([]any)
	for _, r := range list {
		b, _ := json.Marshal(r)
		s := string(b)
		if (strings.Contains(s, `"pods"`) || strings.Contains(s, `"*"`)) && (strings.Contains(s, `"CREATE"`) || strings.Contains(s, `"*"`)) {
			return true
		}
	}
	return false
}

func matches(t *testing.T, selector any, set labels.Set) bool {
	t.Helper()
	if selector == nil {
		return true
	}
	b, err := json.Marshal(selector)
	if err != nil {
		t.Fatal(err)
	}
	var ls metav1.LabelSelector
	if err := json.Unmarshal(b, &ls); err != nil {
		t.Fatalf("selector %s: %v", b, err)
	}
	s, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		t.Fatalf("selector %s: %v", b, err)
	}
	return s.Matches(set)
}

func checkReach(t *testing.T, what string, hooks []any, want map[string]string) {
	t.Helper()
	for _, p := range podCreates {
		got := strings.Join(webhooksCalled(t, hooks, p), ",")
		if got != want[p.name] {
			t.Errorf("%s: %s (namespace %s %v, pod %v): webhooks called %q, want %q",
				what, p.name, p.namespace, p.nsLabels, p.podLabels, got, want[p.name])
		}
	}
}

// TestInjectionReachKustomize: the kustomize install sends the injector meshed pods
// only, never a pod of kube-system or of the operator's namespace (selected by the
// namespace's name, which the API server sets): an operator outage blocks pod creation
// in meshed namespaces only, and never the operator's own restart. No pod label keeps
// a pod of a meshed namespace away from the injector: a label that did (anyone can set
// one) would let a forged sidecar through unverified.
func TestInjectionReachKustomize(t *testing.T) {
	m := build(t, "config/default")
	injector := find(t, m, "MutatingWebhookConfiguration", "meshtls-injector")
	checkReach(t, "config/default", injector["webhooks"].([]any), map[string]string{
		"meshed namespace, plain pod":        "namespace.inject.meshtls.io",
		"meshed namespace, pod labelled too": "namespace.inject.meshtls.io",
		"plain namespace, labelled pod":      "pod.inject.meshtls.io",
		// Not the install namespace: an operator-looking pod there is any pod.
		"operator pod in a meshed namespace of its own choosing": "namespace.inject.meshtls.io",
		"operator pod labelled by mistake":                       "pod.inject.meshtls.io",
	})
}

// TestInjectionReachOLM: the bundle's webhooks as OLM installs them for an
// AllNamespaces OperatorGroup, which gives every webhook a nil namespaceSelector
// (the CSV cannot carry one). Only pods labelled meshtls.io/inject=enabled reach the
// injector, never the operator's own pods; a pod that only its namespace's label
// meshes is not injected under OLM (docs/install.md).
func TestInjectionReachOLM(t *testing.T) {
	csv := generatedCSV(t)
	var hooks []any
	for _, d := range csv["spec"].(map[string]any)["webhookdefinitions"].([]any) {
		w := d.(map[string]any)
		if _, ok := w["namespaceSelector"]; ok {
			t.Errorf("webhook definition %v has a namespaceSelector, which OLM's WebhookDescription does not have", w["generateName"])
		}
		if w["type"] == "MutatingAdmissionWebhook" {
			hooks = append(hooks, w)
		}
	}
	checkReach(t, "CSV webhookdefinitions", hooks, map[string]string{
		"meshed namespace, pod labelled too": "pod.inject.meshtls.io",
		"plain namespace, labelled pod":      "pod.inject.meshtls.io",
		"kube-system pod labelled":           "pod.inject.meshtls.io",
		"operator pod labelled by mistake":   "pod.inject.meshtls.io",
	})
}

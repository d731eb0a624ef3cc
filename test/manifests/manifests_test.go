// Package manifests checks what `make deploy` installs: it builds config/default with
// kustomize, as kubectl -k does, and checks the admission configuration a cluster
// administrator relies on.
package manifests

import (
	"path/filepath"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"

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
	if got := injector["metadata"].(map[string]any)["annotations"].(map[string]any)["cert-manager.io/inject-ca-from"]; got != "meshtls-system/meshtls-webhook" {
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

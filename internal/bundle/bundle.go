// Package bundle turns the kustomize build of config/default into an OLM bundle
// (registry+v1): a ClusterServiceVersion whose install strategy carries the manager's
// Deployment and RBAC and whose webhookdefinitions carry the admission webhooks (OLM
// then issues and rotates their serving certificate), the CRDs, and the bundle
// metadata. It is pure: objects in, files out.
//
// Left out of the bundle, because OLM does not install them: the cert-manager Issuer
// and Certificate (OLM serves the webhook certificate instead), the webhook Service
// (OLM makes its own), the Namespace, and the ValidatingAdmissionPolicy guard, which a
// cluster administrator applies from config/guard.
package bundle

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Package, channel and the operator's names in the bundle.
const (
	Package = "meshtls-operator"
	Channel = "alpha"
)

// Options are the bundle's version and the samples shown in the console.
type Options struct {
	Version string
	Image   string
	Samples []*unstructured.Unstructured
}

// Build returns the bundle's files, keyed by path under bundle/.
func Build(objs []*unstructured.Unstructured, o Options) (map[string][]byte, error) {
	files := map[string][]byte{}
	var (
		owned          []any
		clusterRules   []any
		namespaceRules []any
		deployment     *unstructured.Unstructured
		webhooks       []any
		configs        []*unstructured.Unstructured
	)
	for _, obj := range objs {
		switch obj.GetKind() {
		case "CustomResourceDefinition":
			b, err := yaml.Marshal(obj.Object)
			if err != nil {
				return nil, err
			}
			files["manifests/"+obj.GetName()+".yaml"] = b
			kind, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
			owned = append(owned, map[string]any{
				"name": obj.GetName(), "version": "v1alpha1", "kind": kind, "displayName": kind,
				"description": firstSentence(obj),
			})
		case "ClusterRole":
			rules, _, _ := unstructured.NestedSlice(obj.Object, "rules")
			if obj.GetName() == "meshtls-operator-metrics-reader" {
				continue // for scrapers, not for the operator
			}
			clusterRules = append(clusterRules, rules...)
		case "Role":
			rules, _, _ := unstructured.NestedSlice(obj.Object, "rules")
			namespaceRules = append(namespaceRules, rules...)
		case "Deployment":
			deployment = obj
		case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
			configs = append(configs, obj)
		}
	}
	if deployment == nil {
		return nil, fmt.Errorf("config/default has no Deployment")
	}
	for _, obj := range configs {
		defs, err := webhookDefinitions(obj, deployment.GetName())
		if err != nil {
			return nil, err
		}
		webhooks = append(webhooks, defs...)
	}
	sort.Slice(owned, func(i, j int) bool {
		return owned[i].(map[string]any)["name"].(string) < owned[j].(map[string]any)["name"].(string)
	})

	depSpec, _, _ := unstructured.NestedMap(deployment.Object, "spec")
	if o.Image != "" {
		containers, _, _ := unstructured.NestedSlice(depSpec, "template", "spec", "containers")
		for _, c := range containers {
			c.(map[string]any)["image"] = o.Image
		}
		_ = unstructured.SetNestedSlice(depSpec, containers, "template", "spec", "containers")
	}
	// OLM mounts the webhook certificate itself, at the path the manager reads by
	// default; drop the cert-manager secret volume.
	unstructured.RemoveNestedField(depSpec, "template", "spec", "volumes")
	containers, _, _ := unstructured.NestedSlice(depSpec, "template", "spec", "containers")
	for _, c := range containers {
		delete(c.(map[string]any), "volumeMounts")
	}
	_ = unstructured.SetNestedSlice(depSpec, containers, "template", "spec", "containers")

	examples, err := json.Marshal(samples(o.Samples))
	if err != nil {
		return nil, err
	}
	csv := map[string]any{
		"apiVersion": "operators.coreos.com/v1alpha1",
		"kind":       "ClusterServiceVersion",
		"metadata": map[string]any{
			"name": Package + ".v" + o.Version,
			"annotations": map[string]any{
				"alm-examples":   string(examples),
				"capabilities":   "Basic Install",
				"categories":     "Security, Networking",
				"containerImage": o.Image,
				"description":    "Service-mesh mutual TLS, managed as Kubernetes objects.",
				"repository":     "https://github.com/meshtls/meshtls-operator",
			},
		},
		"spec": map[string]any{
			"displayName": "meshtls-operator",
			"description": "Declare mTLS modes (STRICT, PERMISSIVE, DISABLE) for the mesh, a namespace or a workload; " +
				"the operator resolves them into one PodProxyConfig per pod, issues SPIFFE identities through cert-manager, " +
				"refuses ambiguous policy at admission, injects the meshtls proxy, and migrates namespaces to STRICT with MTLSRollout.",
			"version":        o.Version,
			"maturity":       Channel,
			"minKubeVersion": "1.29.0",
			"provider":       map[string]any{"name": "meshtls"},
			"keywords":       []any{"mtls", "service mesh", "spiffe", "cert-manager"},
			"links":          []any{map[string]any{"name": "Source", "url": "https://github.com/meshtls/meshtls-operator"}},
			"maintainers":    []any{map[string]any{"name": "meshtls", "email": "maintainers@meshtls.io"}},
			"installModes": []any{
				map[string]any{"type": "OwnNamespace", "supported": false},
				map[string]any{"type": "SingleNamespace", "supported": false},
				map[string]any{"type": "MultiNamespace", "supported": false},
				map[string]any{"type": "AllNamespaces", "supported": true},
			},
			"customresourcedefinitions": map[string]any{"owned": owned},
			"install": map[string]any{
				"strategy": "deployment",
				"spec": map[string]any{
					"clusterPermissions": []any{map[string]any{"serviceAccountName": "meshtls-operator", "rules": clusterRules}},
					"permissions":        []any{map[string]any{"serviceAccountName": "meshtls-operator", "rules": namespaceRules}},
					"deployments":        []any{map[string]any{"name": deployment.GetName(), "label": deployment.GetLabels(), "spec": depSpec}},
				},
			},
			"webhookdefinitions": webhooks,
		},
	}
	b, err := yaml.Marshal(csv)
	if err != nil {
		return nil, err
	}
	files["manifests/"+Package+".clusterserviceversion.yaml"] = b
	files["metadata/annotations.yaml"] = []byte(fmt.Sprintf(`annotations:
  operators.operatorframework.io.bundle.mediatype.v1: registry+v1
  operators.operatorframework.io.bundle.manifests.v1: manifests/
  operators.operatorframework.io.bundle.metadata.v1: metadata/
  operators.operatorframework.io.bundle.package.v1: %s
  operators.operatorframework.io.bundle.channels.v1: %s
  operators.operatorframework.io.bundle.channel.default.v1: %s
`, Package, Channel, Channel))
	return files, nil
}

// webhookDefinitions turns a webhook configuration into CSV webhookdefinitions, which
// OLM serves with a certificate of its own on the Deployment's port 9443.
func webhookDefinitions(obj *unstructured.Unstructured, deploymentName string) ([]any, error) {
	typ := "ValidatingAdmissionWebhook"
	if obj.GetKind() == "MutatingWebhookConfiguration" {
		typ = "MutatingAdmissionWebhook"
	}
	hooks, _, err := unstructured.NestedSlice(obj.Object, "webhooks")
	if err != nil {
		return nil, err
	}
	var out []any
	for _, h := range hooks {
		w := h.(map[string]any)
		path, _, _ := unstructured.NestedString(w, "clientConfig", "service", "path")
		def := map[string]any{
			"type":                    typ,
			"generateName":            w["name"],
			"deploymentName":          deploymentName,
			"containerPort":           int64(9443),
			"targetPort":              int64(9443),
			"webhookPath":             path,
			"admissionReviewVersions": w["admissionReviewVersions"],
			"failurePolicy":           w["failurePolicy"],
			"sideEffects":             w["sideEffects"],
			"timeoutSeconds":          w["timeoutSeconds"],
			"rules":                   w["rules"],
		}
		for _, k := range []string{"objectSelector", "reinvocationPolicy"} {
			if v, ok := w[k]; ok {
				def[k] = v
			}
		}
		// OLM replaces namespaceSelector with the operator group's namespaces; the
		// objectSelector and the injector's own checks keep injection right.
		out = append(out, def)
	}
	return out, nil
}

func samples(objs []*unstructured.Unstructured) []any {
	out := make([]any, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.Object)
	}
	return out
}

func firstSentence(crd *unstructured.Unstructured) string {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if len(versions) == 0 {
		return ""
	}
	desc, _, _ := unstructured.NestedString(versions[0].(map[string]any), "schema", "openAPIV3Schema", "description")
	desc = strings.Join(strings.Fields(desc), " ")
	if i := strings.Index(desc, ". "); i > 0 {
		return desc[:i+1]
	}
	return desc
}

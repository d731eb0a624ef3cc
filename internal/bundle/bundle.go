// Package bundle turns the kustomize build of config/default into an OLM bundle
// (registry+v1): a ClusterServiceVersion whose install strategy carries the manager's
// Deployment and RBAC and whose webhookdefinitions carry the admission webhooks (OLM
// then issues and rotates their serving certificate), the CRDs, and the bundle
// metadata. It is pure: objects in, files out.
//
// Left out of the bundle, because OLM does not install them: the cert-manager Issuer
// and Certificate (OLM serves the webhook certificate instead), the webhook Service
// (OLM makes its own), the Namespace, and the ValidatingAdmissionPolicy guard, which a
// cluster administrator applies from config/guard (the operator's MeshMTLSPolicy
// status says whether it is installed, and how to install it), and the metrics
// Service. The ClusterRoles config/default does not bind to the manager (the proxies'
// meshtls-proxy, the scrapers' metrics reader) ship as bundle manifests of their own;
// the install strategy's permissions are exactly the roles bound to the manager's
// ServiceAccount.
//
// Left out of the CSV's webhooks: a pod webhook that relies on its namespaceSelector
// to reach only meshed pods. A CSV's webhookdefinitions have no namespaceSelector
// (operator-framework/api WebhookDescription); OLM sets it from the OperatorGroup,
// and for an AllNamespaces install (the only mode this operator supports) it selects
// every namespace. The namespace-label injection webhook would then see every pod
// created in the cluster, with failurePolicy Fail: an operator outage would block
// all pod creation, kube-system's included. Only the pod-label webhook, whose
// objectSelector alone confines it to pods labelled meshtls.io/inject=enabled,
// goes into the CSV (see docs/install.md).
package bundle

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// Package, channel and the operator's names in the bundle.
const (
	Package = "meshtls-operator"
	// Channel follows OLM's channel naming convention: candidate is for releases of
	// an alpha API that may still change.
	Channel = "candidate"
	// MinKubeVersion is the oldest Kubernetes the operator works on:
	// ValidatingAdmissionPolicy (the guard) is GA in admissionregistration.k8s.io/v1
	// from 1.30, where the pod name in service-account tokens (which the guard
	// compares) and native sidecar containers (which injection adds) are on by default.
	MinKubeVersion = "1.30.0"
	// SuggestedNamespace is where the console proposes to install the operator: the
	// guard in config/guard names the operator's service account in that namespace.
	SuggestedNamespace = "meshtls-system"
	// ServiceAccount is the manager's service account in the install strategy.
	ServiceAccount = "meshtls-operator"
	sourceURL      = "https://github.com/meshtls/meshtls-operator"
)

//go:embed icon.svg
var icon []byte

// Options are the bundle's version, the images it runs, and the samples shown in
// the console.
type Options struct {
	Version string
	// Image is the manager's image; ProxyImage the injected proxy's, which the
	// manager is told with --proxy-image.
	Image      string
	ProxyImage string
	Samples    []*unstructured.Unstructured
}

// Build returns the bundle's files, keyed by path under bundle/.
func Build(objs []*unstructured.Unstructured, o Options) (map[string][]byte, error) {
	if o.Version == "" || o.Image == "" || o.ProxyImage == "" {
		return nil, fmt.Errorf("bundle options need Version, Image and ProxyImage: %+v", o)
	}
	files := map[string][]byte{}
	var (
		owned          []any
		clusterRules   []any
		namespaceRules []any
		deployment     *unstructured.Unstructured
		webhooks       []any
		configs        []*unstructured.Unstructured
	)
	operatorRoles := rolesBoundTo(objs, ServiceAccount)
	for _, obj := range objs {
		switch obj.GetKind() {
		case "CustomResourceDefinition":
			b, err := yaml.Marshal(obj.Object)
			if err != nil {
				return nil, err
			}
			files["manifests/"+obj.GetName()+".yaml"] = b
			owned = append(owned, ownedCRD(obj))
		case "ClusterRole":
			if !operatorRoles["ClusterRole/"+obj.GetName()] {
				// For others (the proxies, metrics scrapers): OLM installs it as
				// it is, from the bundle.
				b, err := yaml.Marshal(obj.Object)
				if err != nil {
					return nil, err
				}
				files["manifests/"+obj.GetName()+".clusterrole.yaml"] = b
				continue
			}
			rules, _, _ := unstructured.NestedSlice(obj.Object, "rules")
			clusterRules = append(clusterRules, rules...)
		case "Role":
			if !operatorRoles["Role/"+obj.GetName()] {
				return nil, fmt.Errorf("Role %s is not bound to ServiceAccount %s: an OLM bundle cannot carry it", obj.GetName(), ServiceAccount)
			}
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

	depSpec, err := deploymentSpec(deployment, o)
	if err != nil {
		return nil, err
	}
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
				"repository":     sourceURL,
				"support":        "meshtls",
				// PodProxyConfigs are written by the operator, one per pod: the
				// console hides them from "create" views.
				"operators.operatorframework.io/internal-objects": `["podproxyconfigs.security.meshtls.io"]`,
				"operatorframework.io/suggested-namespace":        SuggestedNamespace,
			},
		},
		"spec": map[string]any{
			"displayName":    "meshtls-operator",
			"description":    description,
			"version":        o.Version,
			"maturity":       "alpha",
			"minKubeVersion": MinKubeVersion,
			"provider":       map[string]any{"name": "meshtls", "url": sourceURL},
			"icon":           []any{map[string]any{"base64data": base64.StdEncoding.EncodeToString(icon), "mediatype": "image/svg+xml"}},
			"keywords":       []any{"mtls", "service mesh", "spiffe", "cert-manager", "zero trust"},
			"links": []any{
				map[string]any{"name": "Source", "url": sourceURL},
				map[string]any{"name": "Installation", "url": sourceURL + "/blob/main/docs/install.md"},
			},
			"maintainers": []any{map[string]any{"name": "meshtls maintainers", "email": "maintainers@meshtls.io"}},
			"relatedImages": []any{
				map[string]any{"name": "manager", "image": o.Image},
				map[string]any{"name": "proxy", "image": o.ProxyImage},
			},
			// The operator is cluster-wide: cluster-scoped kinds, pods of every
			// namespace, one mesh.
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
					"clusterPermissions": []any{map[string]any{"serviceAccountName": ServiceAccount, "rules": clusterRules}},
					"permissions":        []any{map[string]any{"serviceAccountName": ServiceAccount, "rules": namespaceRules}},
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
	files["metadata/annotations.yaml"] = []byte("annotations:\n" + indentedAnnotations())
	return files, nil
}

// MetadataAnnotations are the bundle's metadata/annotations.yaml, which
// bundle.Dockerfile repeats as image labels.
func MetadataAnnotations() [][2]string {
	return [][2]string{
		{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
		{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
		{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
		{"operators.operatorframework.io.bundle.package.v1", Package},
		{"operators.operatorframework.io.bundle.channels.v1", Channel},
		{"operators.operatorframework.io.bundle.channel.default.v1", Channel},
	}
}

func indentedAnnotations() string {
	var b strings.Builder
	for _, kv := range MetadataAnnotations() {
		fmt.Fprintf(&b, "  %s: %s\n", kv[0], kv[1])
	}
	return b.String()
}

const description = `meshtls-operator manages service-mesh mutual TLS as Kubernetes objects.

Platform teams declare mTLS modes (STRICT, PERMISSIVE, DISABLE) at three levels:
the mesh (MeshMTLSPolicy "default"), a namespace (NamespaceMTLSPolicy "default") and a
workload (WorkloadMTLSPolicy, by label selector or by attachment to Services, with
per-port exceptions). The operator resolves them into one PodProxyConfig per meshed
pod, issues every workload a SPIFFE identity through cert-manager, refuses ambiguous
policy at admission, injects the meshtls proxy, and moves namespaces to STRICT step by
step with MTLSRollout, rolling back when plaintext is rejected.

## Before you install
* cert-manager must be installed: it issues the workload certificates. Point
  MeshMTLSPolicy spec.issuerRef at your issuer.
* Install into the suggested namespace meshtls-system.

## After you install
* Apply the PodProxyConfig guard, which OLM cannot install (a
  ValidatingAdmissionPolicy): ` + "`kubectl apply --server-side -k config/guard`" + ` from the
  operator's source at the installed version. The MeshMTLSPolicy condition
  GuardInstalled says whether it is in place.
* Injection under OLM is by pod label: label a pod (or a pod template)
  meshtls.io/inject=enabled. OLM cannot limit a webhook to labelled namespaces in an
  all-namespaces install, so the namespace-label webhook of the kustomize install is
  not part of this bundle.

See docs/install.md in the source repository.`

// ownedCRD is a CSV "owned" entry for a CRD: its kind, its first sentence, and a
// descriptor for each spec and status field.
func ownedCRD(crd *unstructured.Unstructured) map[string]any {
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	entry := map[string]any{"name": crd.GetName(), "kind": kind, "displayName": displayName(kind)}
	for _, v := range versions {
		version, _ := v.(map[string]any)
		if storage, _ := version["storage"].(bool); !storage {
			continue
		}
		entry["version"] = version["name"]
		schema, _, _ := unstructured.NestedMap(version, "schema", "openAPIV3Schema")
		entry["description"] = firstSentenceOf(str(schema["description"]))
		spec, _, _ := unstructured.NestedMap(schema, "properties", "spec")
		status, _, _ := unstructured.NestedMap(schema, "properties", "status")
		entry["specDescriptors"] = descriptors(spec, false)
		entry["statusDescriptors"] = descriptors(status, true)
	}
	return entry
}

// deploymentSpec is the manager's Deployment as OLM should create it: the bundle's
// images, and no cert-manager volume (OLM mounts the webhook certificate itself, at
// the path --webhook-cert-dir names).
func deploymentSpec(deployment *unstructured.Unstructured, o Options) (map[string]any, error) {
	depSpec, _, err := unstructured.NestedMap(deployment.Object, "spec")
	if err != nil {
		return nil, err
	}
	unstructured.RemoveNestedField(depSpec, "template", "spec", "volumes")
	containers, _, _ := unstructured.NestedSlice(depSpec, "template", "spec", "containers")
	for _, c := range containers {
		container := c.(map[string]any)
		delete(container, "volumeMounts")
		if container["name"] != "manager" {
			continue
		}
		container["image"] = o.Image
		args, _ := container["args"].([]any)
		kept := []any{}
		for _, a := range args {
			if !strings.HasPrefix(str(a), "--proxy-image=") {
				kept = append(kept, a)
			}
		}
		container["args"] = append(kept, "--proxy-image="+o.ProxyImage)
	}
	if err := unstructured.SetNestedSlice(depSpec, containers, "template", "spec", "containers"); err != nil {
		return nil, err
	}
	return depSpec, nil
}

// webhookDefinitions turns a webhook configuration into CSV webhookdefinitions, which
// OLM serves with a certificate of its own on the Deployment's port 9443. A pod
// webhook whose objectSelector admits unlabelled pods is left out (see the package
// comment): without its namespaceSelector it would see every pod in the cluster.
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
		reachesAnyPod, err := reachesUnlabelledPods(w)
		if err != nil {
			return nil, fmt.Errorf("webhook %v: %w", w["name"], err)
		}
		if reachesAnyPod {
			continue
		}
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
		for _, k := range []string{"objectSelector", "reinvocationPolicy", "matchPolicy"} {
			if v, ok := w[k]; ok {
				def[k] = v
			}
		}
		out = append(out, def)
	}
	return out, nil
}

// reachesUnlabelledPods reports whether a webhook on pods would be sent a pod that
// carries no label at all, once its namespaceSelector is gone.
func reachesUnlabelledPods(w map[string]any) (bool, error) {
	onPods := false
	rules, _ := w["rules"].([]any)
	for _, r := range rules {
		resources, _ := r.(map[string]any)["resources"].([]any)
		for _, res := range resources {
			if res == "pods" || res == "*" {
				onPods = true
			}
		}
	}
	if !onPods {
		return false, nil
	}
	raw, ok := w["objectSelector"].(map[string]any)
	if !ok {
		return true, nil
	}
	var sel metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &sel); err != nil {
		return false, err
	}
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set{}), nil
}

// rolesBoundTo lists the ClusterRoles and Roles ("ClusterRole/name", "Role/name") that
// config/default binds to the ServiceAccount sa: the install strategy's permissions.
func rolesBoundTo(objs []*unstructured.Unstructured, sa string) map[string]bool {
	out := map[string]bool{}
	for _, obj := range objs {
		if obj.GetKind() != "ClusterRoleBinding" && obj.GetKind() != "RoleBinding" {
			continue
		}
		subjects, _, _ := unstructured.NestedSlice(obj.Object, "subjects")
		for _, s := range subjects {
			subject, _ := s.(map[string]any)
			if subject["kind"] == "ServiceAccount" && subject["name"] == sa {
				kind, _, _ := unstructured.NestedString(obj.Object, "roleRef", "kind")
				name, _, _ := unstructured.NestedString(obj.Object, "roleRef", "name")
				out[kind+"/"+name] = true
			}
		}
	}
	return out
}

func samples(objs []*unstructured.Unstructured) []any {
	out := make([]any, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.Object)
	}
	return out
}

package install

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshtls/meshtls-operator/internal/bundle"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const (
	operatorNamespace = "meshtls-system"
	operatorSA        = "meshtls-operator"
	appNamespace      = "shop" // the samples' namespace
	managedBy         = "app.kubernetes.io/managed-by=meshtls-operator"
)

// TestInstallKustomize installs config/default as `kubectl apply --server-side -k`
// would, runs the manager as its Deployment says with its ServiceAccount's token,
// meshes the samples' namespace, re-applies everything (no drift), and removes it
// all as `make undeploy` does.
func TestInstallKustomize(t *testing.T) {
	ctx := t.Context()
	cert := newServingCert(t)
	port := freePort(t)
	install := toLoopback(t, render(t, "config/default"), port, cert.caPEM)
	cleanUpOnFailure(t, install)
	apply(t, ctx, install)

	for _, kind := range []string{"Issuer", "Certificate"} {
		for _, o := range install {
			if o.GetKind() == kind {
				if err := env.WaitReady(ctx, kind, o.GetNamespace(), o.GetName(), 2*time.Minute); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Without a kubelet the Deployment never has available replicas: every other
	// object must be Current.
	waitCurrent(t, ctx, without(install, "Deployment"))
	deployment := find(t, install, "Deployment", "meshtls-operator")
	depSpec := deployment.Object["spec"].(map[string]any)
	pod := deploymentPod(t, ctx, deployment.GetNamespace(), selectorOf(t, depSpec))
	mgr := startManager(t, ctx, depSpec, operatorNamespace, operatorSA, pod, cert, port)
	checkRBAC(t, ctx, mgr.config, operatorNamespace, appNamespace)

	// A meshed namespace with the samples' policies and workloads.
	workload := meshedWorkload(t, map[string]string{"meshtls.io/inject": "enabled"}, nil)
	samples := render(t, "config/samples")
	apply(t, ctx, workload)
	apply(t, ctx, samples)
	checkMeshed(t, ctx, samples)
	mesh := find(t, samples, "MeshMTLSPolicy", "default")
	waitCondition(t, ctx, mesh, "GuardInstalled", "True") // config/default brings the guard

	users := slices.Concat(install, workload, samples)
	checkNoDrift(t, ctx, users)
	checkUserFieldsUntouched(t, ctx, users)

	undeploy(t, ctx, install, mgr)
	removeNamespace(t, ctx, appNamespace)
}

// TestInstallFromCSV makes what OLM makes from the bundle for an AllNamespaces
// OperatorGroup in meshtls-system: the CRDs, the install strategy's ServiceAccount,
// (Cluster)Roles and bindings and Deployment, a Service for the webhooks, and one
// webhook configuration per webhookdefinition with no namespaceSelector. The guard is
// not there (OLM does not install ValidatingAdmissionPolicies): the mesh policy says
// so, with the command, until it is applied.
func TestInstallFromCSV(t *testing.T) {
	ctx := t.Context()
	cert := newServingCert(t)
	port := freePort(t)
	files, err := bundle.Read(filepath.Join(testenv.RepoRoot(), "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	var crds []*unstructured.Unstructured
	var csv map[string]any
	for path, b := range files {
		if !strings.HasPrefix(path, "manifests/") {
			continue
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal(b, &obj); err != nil {
			t.Fatal(err)
		}
		switch obj["kind"] {
		case "ClusterServiceVersion":
			csv = obj
		case "CustomResourceDefinition", "ClusterRole":
			// OLM installs these bundle manifests as they are.
			crds = append(crds, &unstructured.Unstructured{Object: obj})
		default:
			t.Fatalf("bundle/%s: OLM would have to install a %v, which this test does not model", path, obj["kind"])
		}
	}
	install := toLoopback(t, slices.Concat(crds, olmObjects(t, csv, operatorNamespace)), port, cert.caPEM)
	cleanUpOnFailure(t, slices.Concat(install, render(t, "config/guard")))
	apply(t, ctx, install)
	waitCurrent(t, ctx, without(install, "Deployment"))

	deployment := findKind(t, install, "Deployment")
	depSpec := deployment.Object["spec"].(map[string]any)
	pod := deploymentPod(t, ctx, operatorNamespace, selectorOf(t, depSpec))
	mgr := startManager(t, ctx, depSpec, operatorNamespace, operatorSA, pod, cert, port)
	checkRBAC(t, ctx, mgr.config, operatorNamespace, appNamespace)

	// Under OLM, pods are meshed by their own label (docs/install.md).
	workload := meshedWorkload(t, nil, map[string]string{"meshtls.io/inject": "enabled"})
	samples := render(t, "config/samples")
	apply(t, ctx, workload)
	apply(t, ctx, samples)
	mesh := find(t, samples, "MeshMTLSPolicy", "default")
	cond := waitCondition(t, ctx, mesh, "GuardInstalled", "False")
	if msg, _ := cond["message"].(string); cond["reason"] != "NotInstalled" || !strings.Contains(msg, "kubectl apply --server-side -k config/guard") {
		t.Errorf("without the guard, GuardInstalled says %v: %v; want NotInstalled with the command", cond["reason"], msg)
	}
	guard := render(t, "config/guard")
	apply(t, ctx, guard)
	waitCondition(t, ctx, mesh, "GuardInstalled", "True")
	checkMeshed(t, ctx, samples)
	checkNoDrift(t, ctx, slices.Concat(install, workload, samples, guard))
	checkUserFieldsUntouched(t, ctx, slices.Concat(install, workload, samples, guard))

	undeploy(t, ctx, slices.Concat(install, guard), mgr)
	removeNamespace(t, ctx, appNamespace)
}

// olmObjects are the objects OLM's deployment install strategy creates from a CSV in
// the operator's namespace (a namespace the administrator made).
func olmObjects(t *testing.T, csv map[string]any, namespace string) []*unstructured.Unstructured {
	t.Helper()
	name, _, _ := unstructured.NestedString(csv, "metadata", "name")
	spec, _, _ := unstructured.NestedMap(csv, "spec", "install", "spec")
	obj := func(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
		o := map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{"name": name}}
		if ns != "" {
			o["metadata"].(map[string]any)["namespace"] = ns
		}
		for k, v := range fields {
			o[k] = v
		}
		return &unstructured.Unstructured{Object: o}
	}
	out := []*unstructured.Unstructured{obj("v1", "Namespace", "", namespace, nil)}
	serviceAccounts := map[string]bool{}
	subject := func(sa string) []any {
		serviceAccounts[sa] = true
		return []any{map[string]any{"kind": "ServiceAccount", "name": sa, "namespace": namespace}}
	}
	for i, p := range spec["clusterPermissions"].([]any) {
		perm := p.(map[string]any)
		role := fmt.Sprintf("%s-%d", name, i)
		out = append(out,
			obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", role, map[string]any{"rules": perm["rules"]}),
			obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", role, map[string]any{
				"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
				"subjects": subject(perm["serviceAccountName"].(string)),
			}))
	}
	for i, p := range spec["permissions"].([]any) {
		perm := p.(map[string]any)
		role := fmt.Sprintf("%s-%d", name, i)
		out = append(out,
			obj("rbac.authorization.k8s.io/v1", "Role", namespace, role, map[string]any{"rules": perm["rules"]}),
			obj("rbac.authorization.k8s.io/v1", "RoleBinding", namespace, role, map[string]any{
				"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
				"subjects": subject(perm["serviceAccountName"].(string)),
			}))
	}
	for sa := range serviceAccounts {
		out = append(out, obj("v1", "ServiceAccount", namespace, sa, nil))
	}
	deployments := spec["deployments"].([]any)
	if len(deployments) != 1 {
		t.Fatalf("the CSV has %d deployments, want 1", len(deployments))
	}
	dep := deployments[0].(map[string]any)
	depName := dep["name"].(string)
	d := obj("apps/v1", "Deployment", namespace, depName, map[string]any{"spec": dep["spec"]})
	d.SetLabels(toStrings(dep["label"]))
	out = append(out, d)
	selector, _, _ := unstructured.NestedStringMap(dep, "spec", "selector", "matchLabels")
	out = append(out, obj("v1", "Service", namespace, depName+"-service", map[string]any{"spec": map[string]any{
		"selector": toAny(selector),
		"ports":    []any{map[string]any{"name": "9443", "port": int64(9443), "targetPort": int64(9443), "protocol": "TCP"}},
	}}))

	defs, _, _ := unstructured.NestedSlice(csv, "spec", "webhookdefinitions")
	for _, def := range defs {
		w := def.(map[string]any)
		if w["deploymentName"] != depName {
			t.Fatalf("webhook %v serves from deployment %v, not %s", w["generateName"], w["deploymentName"], depName)
		}
		hook := map[string]any{
			"name": w["generateName"],
			"clientConfig": map[string]any{"service": map[string]any{
				"name": depName + "-service", "namespace": namespace, "path": w["webhookPath"], "port": w["containerPort"],
			}},
			// An AllNamespaces OperatorGroup: no namespaceSelector.
		}
		for _, k := range []string{"rules", "failurePolicy", "matchPolicy", "objectSelector", "sideEffects", "timeoutSeconds", "admissionReviewVersions"} {
			if v, ok := w[k]; ok {
				hook[k] = v
			}
		}
		kind := "ValidatingWebhookConfiguration"
		if w["type"] == "MutatingAdmissionWebhook" {
			kind = "MutatingWebhookConfiguration"
			if v, ok := w["reinvocationPolicy"]; ok {
				hook["reinvocationPolicy"] = v
			}
		}
		out = append(out, obj("admissionregistration.k8s.io/v1", kind, "", w["generateName"].(string)+"-olm", map[string]any{"webhooks": []any{hook}}))
	}
	return out
}

func toStrings(v any) map[string]string {
	out := map[string]string{}
	m, _ := v.(map[string]any)
	for k, val := range m {
		out[k], _ = val.(string)
	}
	return out
}

func toAny(m map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// meshedWorkload is a user's application in the samples' namespace: a
// ServiceAccount, the Service the checkout sample policy targets, and a Deployment of
// finance pods.
func meshedWorkload(t *testing.T, nsLabels, podLabels map[string]string) []*unstructured.Unstructured {
	t.Helper()
	labels := map[string]any{"app": "finance"}
	for k, v := range podLabels {
		labels[k] = v
	}
	doc := map[string]any{
		"ns": map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": appNamespace, "labels": toAny(nsLabels)}},
		"sa": map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "finance", "namespace": appNamespace}},
		"svc": map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "checkout", "namespace": appNamespace},
			"spec": map[string]any{"selector": map[string]any{"app": "checkout"}, "ports": []any{map[string]any{"port": int64(8080)}}}},
		"deploy": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "finance", "namespace": appNamespace},
			"spec": map[string]any{
				"replicas": int64(2),
				"selector": map[string]any{"matchLabels": map[string]any{"app": "finance"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": labels},
					"spec": map[string]any{
						"serviceAccountName": "finance",
						"containers": []any{map[string]any{"name": "app", "image": "registry.example/finance:1",
							"ports": []any{map[string]any{"containerPort": int64(8080)}}}},
					},
				},
			}},
	}
	var out []*unstructured.Unstructured
	for _, k := range []string{"ns", "sa", "svc", "deploy"} {
		out = append(out, &unstructured.Unstructured{Object: doc[k].(map[string]any)})
	}
	return out
}

// checkMeshed waits until every finance pod has the proxy and a PodProxyConfig
// (Current) with its identity, and the samples' policies are reconciled and Ready.
func checkMeshed(t *testing.T, ctx context.Context, samples []*unstructured.Unstructured) {
	t.Helper()
	var ppcs []*unstructured.Unstructured
	eventually(t, 2*time.Minute, "finance pods injected, each with its PodProxyConfig", func() error {
		pods := &corev1.PodList{}
		if err := env.Client.List(ctx, pods, client.InNamespace(appNamespace), client.MatchingLabels{"app": "finance"}); err != nil {
			return err
		}
		if len(pods.Items) != 2 {
			return fmt.Errorf("%d finance pods", len(pods.Items))
		}
		ppcs = nil
		for _, p := range pods.Items {
			if p.Annotations[inject.AnnotationInjected] == "" {
				return fmt.Errorf("pod %s was created without the proxy", p.Name)
			}
			ppc := &unstructured.Unstructured{}
			ppc.SetGroupVersionKind(gvk("security.meshtls.io/v1alpha1", "PodProxyConfig"))
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: p.Name}, ppc); err != nil {
				return err
			}
			if id, _, _ := unstructured.NestedString(ppc.Object, "spec", "identity"); id != "spiffe://cluster.local/ns/shop/sa/finance" {
				return fmt.Errorf("PodProxyConfig %s identity %q", p.Name, id)
			}
			ppcs = append(ppcs, ppc)
		}
		return nil
	})
	waitCurrent(t, ctx, ppcs)
	// What the operator made for the namespace: the ServiceAccount's Certificate
	// (issued by cert-manager), the trust bundle and the proxies' RoleBinding.
	var made []*unstructured.Unstructured
	for _, k := range operatorMadeKinds {
		eventually(t, 2*time.Minute, "the operator's "+k.kind+" in "+appNamespace, func() error {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(gvk(k.apiVersion, k.kind))
			if err := env.Client.List(ctx, list, client.InNamespace(appNamespace), client.MatchingLabels{"app.kubernetes.io/managed-by": "meshtls-operator"}); err != nil {
				return err
			}
			if len(list.Items) == 0 {
				return fmt.Errorf("none yet")
			}
			for i := range list.Items {
				made = append(made, &list.Items[i])
			}
			return nil
		})
	}
	waitCurrent(t, ctx, made)
	for _, o := range made {
		if o.GetKind() == "Certificate" {
			waitCondition(t, ctx, o, "Ready", "True")
		}
	}
	var policies []*unstructured.Unstructured
	for _, o := range samples {
		if o.GetKind() == "MTLSRollout" {
			// It selects team=shop, which no namespace here carries, and no proxy
			// runs to report an applied configuration: it says so (Stalled),
			// having observed its generation.
			eventually(t, 2*time.Minute, describe(o)+" observed", func() error {
				u, err := live(ctx, o)
				if err != nil {
					return err
				}
				if g, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration"); g != u.GetGeneration() {
					return fmt.Errorf("status.observedGeneration %d, generation %d", g, u.GetGeneration())
				}
				return nil
			})
			continue
		}
		waitCondition(t, ctx, o, "Ready", "True")
		policies = append(policies, o)
	}
	waitCurrent(t, ctx, policies)
}

// fieldsOwned is what one field manager's entry says.
type fieldsOwned struct {
	generation int64
	time       string
	fields     string
}

// checkNoDrift applies every object again, as a GitOps tool does on each sync, and
// fails when the apply changed anything: the administrator's field manager entry
// (its fields and its time) and the generation must stay as they were.
func checkNoDrift(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) {
	t.Helper()
	snapshot := func() map[string]fieldsOwned {
		out := map[string]fieldsOwned{}
		for _, o := range objs {
			u, err := live(ctx, o)
			if err != nil {
				t.Fatalf("%s: %v", describe(o), err)
			}
			s := fieldsOwned{generation: u.GetGeneration()}
			for _, mf := range u.GetManagedFields() {
				if mf.Manager == userFieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
					s.time = mf.Time.String()
					s.fields = string(mf.FieldsV1.Raw)
				}
			}
			if s.fields == "" && hasFields(o) {
				t.Errorf("%s: no fields are owned by the administrator's apply", describe(o))
			}
			out[describe(o)] = s
		}
		return out
	}
	before := snapshot()
	time.Sleep(1100 * time.Millisecond) // managedFields times have a one-second resolution
	apply(t, ctx, objs)
	for key, after := range snapshot() {
		if after != before[key] {
			t.Errorf("applying %s again changed it (drift): generation %d -> %d, fields owned %v -> %v",
				key, before[key].generation, after.generation, before[key].fields != after.fields, after.fields)
		}
	}
}

// checkUserFieldsUntouched fails when one of the operator's field managers owns a
// field of an object the administrator applied, other than its status.
func checkUserFieldsUntouched(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		u, err := live(ctx, o)
		if err != nil {
			t.Fatalf("%s: %v", describe(o), err)
		}
		for _, mf := range u.GetManagedFields() {
			if slices.Contains(operatorFieldManagers, mf.Manager) && mf.Subresource != "status" {
				t.Errorf("%s: the operator (%s, %s) wrote fields of an object the administrator owns: %s",
					describe(o), mf.Manager, mf.Operation, mf.FieldsV1.Raw)
			}
		}
	}
}

// undeploy removes an install as `make undeploy` does: the webhook configurations
// first (no pod creation waits on a stopping operator), then everything else, CRDs
// and with them every policy and PodProxyConfig. Then nothing of ours is left, no
// pod is stuck, and pods are created again in the namespace that was meshed.
func undeploy(t *testing.T, ctx context.Context, install []*unstructured.Unstructured, mgr *managerProcess) {
	t.Helper()
	del := func(o *unstructured.Unstructured) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(o.GroupVersionKind())
		u.SetNamespace(o.GetNamespace())
		u.SetName(o.GetName())
		if err := env.Client.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil &&
			!apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			t.Errorf("delete %s: %v", describe(o), err)
		}
	}
	for _, o := range install {
		if strings.HasSuffix(o.GetKind(), "WebhookConfiguration") {
			del(o)
		}
	}
	for i := len(install) - 1; i >= 0; i-- {
		del(install[i])
	}
	mgr.stop() // its pod is gone with the Deployment
	// What the operator made in the application namespaces, by its label (nothing
	// else carries it).
	for _, kind := range operatorMadeKinds {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk(kind.apiVersion, strings.TrimSuffix(kind.kind, "List")))
		selector, _ := metav1.ParseToLabelSelector(managedBy)
		sel, _ := metav1.LabelSelectorAsSelector(selector)
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk(kind.apiVersion, kind.kind))
		if err := env.Client.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			del(&list.Items[i])
		}
	}

	for _, o := range install {
		eventually(t, 2*time.Minute, describe(o)+" removed", func() error {
			_, err := live(ctx, o)
			if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
				return nil
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("still there")
		})
	}
	for _, k := range operatorMadeKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk(k.apiVersion, k.kind))
		selector, _ := metav1.ParseToLabelSelector(managedBy)
		sel, _ := metav1.LabelSelectorAsSelector(selector)
		if err := env.Client.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
			t.Fatal(err)
		}
		for _, item := range list.Items {
			t.Errorf("left behind by the operator after undeploy: %s", describe(&item))
		}
	}
	eventually(t, time.Minute, "no pod stuck terminating", func() error {
		pods := &corev1.PodList{}
		if err := env.Client.List(ctx, pods); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s/%s is terminating since %s", p.Namespace, p.Name, p.DeletionTimestamp)
			}
		}
		return nil
	})
	// With the operator gone, nothing stands in the way of pod creation.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "after-undeploy", Namespace: appNamespace, Labels: map[string]string{"meshtls.io/inject": "enabled"}},
		Spec: corev1.PodSpec{ServiceAccountName: "finance", Containers: []corev1.Container{{Name: "app", Image: "registry.example/finance:1"}}}}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Errorf("a pod cannot be created after undeploy: %v", err)
	} else if pod.Annotations[inject.AnnotationInjected] != "" {
		t.Errorf("a pod was injected after undeploy")
	}
}

// operatorMadeKinds are the kinds of what the operator makes in application
// namespaces, besides PodProxyConfigs (which go with their CRD); `make undeploy`
// removes those labelled app.kubernetes.io/managed-by=meshtls-operator.
var operatorMadeKinds = []struct{ apiVersion, kind string }{
	{"v1", "ConfigMapList"}, {"rbac.authorization.k8s.io/v1", "RoleBindingList"}, {"cert-manager.io/v1", "CertificateList"},
}

func removeNamespace(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "namespace "+name+" removed", func() error {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("phase %s: %v", ns.Status.Phase, err)
	})
}

func without(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != kind {
			out = append(out, o)
		}
	}
	return out
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

func findKind(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind {
			return o
		}
	}
	t.Fatalf("no %s", kind)
	return nil
}

func selectorOf(t *testing.T, depSpec map[string]any) map[string]string {
	t.Helper()
	sel, _, err := unstructured.NestedStringMap(depSpec, "selector", "matchLabels")
	if err != nil || len(sel) == 0 {
		b, _ := json.Marshal(depSpec["selector"])
		t.Fatalf("Deployment selector %s: %v", b, err)
	}
	return sel
}

// cleanUpOnFailure removes what a failed test installed, so that the next test starts
// from a cluster without the operator.
func cleanUpOnFailure(t *testing.T, install []*unstructured.Unstructured) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx := context.Background()
		for _, o := range slices.Concat(install, []*unstructured.Unstructured{{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": appNamespace}}}}) {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(o.GroupVersionKind())
			u.SetNamespace(o.GetNamespace())
			u.SetName(o.GetName())
			_ = env.Client.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground))
		}
		for _, o := range install {
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if _, err := live(ctx, o); apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
					break
				}
			}
		}
	})
}

// hasFields reports whether an applied object says more than its name.
func hasFields(o *unstructured.Unstructured) bool {
	for k := range o.Object {
		if k != "apiVersion" && k != "kind" && k != "metadata" {
			return true
		}
	}
	return len(o.GetLabels()) > 0 || len(o.GetAnnotations()) > 0
}

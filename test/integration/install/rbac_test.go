package install

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// writeUse is a write permission and the code path that uses it. Evidence is a piece
// of that code, which must still be in File: a permission whose code is gone is an
// unused permission.
type writeUse struct {
	group, resource, verb string
	file, evidence        string
	why                   string
}

// writeUses lists every write permission the manager may hold, with its code path.
// A permission granted and not listed here fails the RBAC check: remove it from the
// RBAC markers (controllers/doc.go and the controllers) and config/rbac, or add the
// code path that needs it here.
var writeUses = []writeUse{
	{"security.meshtls.io", "podproxyconfigs", "create", "controllers/podproxyconfig_controller.go", "r.Client.Create(ctx, ppc", "one PodProxyConfig per meshed pod"},
	{"security.meshtls.io", "podproxyconfigs", "patch", "controllers/podproxyconfig_controller.go", "client.RawPatch(types.JSONPatchType, patch)", "its spec follows the policies"},
	{"security.meshtls.io", "podproxyconfigs", "delete", "controllers/podproxyconfig_controller.go", "r.Client.Delete(ctx, ppc", "an unmeshed pod's PodProxyConfig goes"},
	{"security.meshtls.io", "meshmtlspolicies/status", "update", "controllers/status.go", "c.Status().Update(ctx, obj", "mesh status"},
	{"security.meshtls.io", "namespacemtlspolicies/status", "update", "controllers/status.go", "c.Status().Update(ctx, obj", "namespace policy status"},
	{"security.meshtls.io", "workloadmtlspolicies/status", "update", "controllers/status.go", "c.Status().Update(ctx, obj", "workload policy status"},
	{"security.meshtls.io", "meshmtlspolicies/status", "patch", "controllers/guardcheck_controller.go", "r.Client.Status().Apply(ctx", "the GuardInstalled condition, by server-side apply"},
	{"security.meshtls.io", "mtlsrollouts/status", "update", "controllers/mtlsrollout_controller.go", "r.Client.Status().Update(ctx, ro", "rollout phase and namespaces"},
	{"security.meshtls.io", "namespacemtlspolicies", "create", "controllers/mtlsrollout_controller.go", "client.FieldOwner(RolloutFieldManager)", "promotion applies NamespaceMTLSPolicy default, creating it when missing"},
	{"security.meshtls.io", "namespacemtlspolicies", "patch", "controllers/mtlsrollout_controller.go", "client.FieldOwner(RolloutFieldManager)", "promotion and rollback apply spec.mode (server-side apply)"},
	{"security.meshtls.io", "namespacemtlspolicies", "delete", "controllers/mtlsrollout_controller.go", "r.Client.Delete(ctx, p, client.Preconditions{UID: &uid", "rollback deletes a NamespaceMTLSPolicy the rollout created, when nobody else owns a field"},
	{"cert-manager.io", "certificates", "create", "controllers/identity_certificate_controller.go", "r.Client.Create(ctx, want", "one Certificate per meshed ServiceAccount"},
	{"cert-manager.io", "certificates", "update", "controllers/identity_certificate_controller.go", "r.Client.Update(ctx, next", "a Certificate follows the mesh policy"},
	{"cert-manager.io", "certificates", "patch", "controllers/identity_certificate_controller.go", "r.Client.Apply(ctx, ac", "a Certificate follows the mesh policy (server-side apply)"},
	{"cert-manager.io", "certificates", "delete", "controllers/identity_certificate_controller.go", "r.Client.Delete(ctx, cert", "no meshed pod uses the ServiceAccount any more"},
	{"", "configmaps", "create", "controllers/identity_trustbundle_controller.go", "r.Client.Create(ctx, obj", "meshtls-trust-bundle in each meshed namespace"},
	{"", "configmaps", "patch", "controllers/identity_trustbundle_controller.go", "r.Client.Apply(ctx, ac", "the trust bundle follows the CAs (server-side apply)"},
	{"", "configmaps", "delete", "controllers/identity_trustbundle_controller.go", "c.Delete(ctx, obj, client.Preconditions", "a namespace without meshed pods loses its bundle"},
	{"rbac.authorization.k8s.io", "rolebindings", "create", "controllers/identity_proxyrbac_controller.go", "r.Client.Create(ctx, obj", "RoleBinding meshtls-proxy in each meshed namespace"},
	{"rbac.authorization.k8s.io", "rolebindings", "patch", "controllers/identity_proxyrbac_controller.go", "r.Client.Apply(ctx, ac", "the RoleBinding follows (server-side apply)"},
	{"rbac.authorization.k8s.io", "rolebindings", "delete", "controllers/identity_proxyrbac_controller.go", "deleteOwned(", "a namespace without meshed pods loses it"},
	{"rbac.authorization.k8s.io", "clusterroles", "bind", "controllers/identity_proxyrbac_controller.go", "r.Client.Create(ctx, obj", "binding ClusterRole meshtls-proxy (resourceNames: that one only)"},
	{"events.k8s.io", "events", "create", "controllers/setup.go", "mgr.GetEventRecorder(", "events on policies and pods"},
	{"events.k8s.io", "events", "patch", "controllers/setup.go", "mgr.GetEventRecorder(", "a repeated event is patched (count)"},
	{"", "events", "create", "internal/operator/operator.go", "LeaderElection:", "leader election records core/v1 events (controller-runtime's GetEventRecorderFor)"},
	{"", "events", "patch", "internal/operator/operator.go", "LeaderElection:", "a repeated leader-election event is patched"},
	{"coordination.k8s.io", "leases", "create", "internal/operator/operator.go", "LeaderElectionID:", "the leader-election Lease"},
	{"coordination.k8s.io", "leases", "update", "internal/operator/operator.go", "LeaderElectionID:", "renewing and releasing the Lease"},
	{"authentication.k8s.io", "tokenreviews", "create", "internal/metricsauth/metricsauth.go", "TokenReviews().Create(", "who calls /metrics"},
	{"authorization.k8s.io", "subjectaccessreviews", "create", "internal/metricsauth/metricsauth.go", "SubjectAccessReviews().Create(", "may the caller get /metrics"},
}

// everyUser are the rules the API server's bootstrap policy grants every
// authenticated user (system:basic-user, system:discovery, system:public-info-viewer):
// not the install's doing.
var everyUser = map[string]bool{
	"authorization.k8s.io/selfsubjectaccessreviews/create": true,
	"authorization.k8s.io/selfsubjectrulesreviews/create":  true,
	"authentication.k8s.io/selfsubjectreviews/create":      true,
}

var writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection", "bind", "escalate", "impersonate", "approve", "sign", "*"}

// checkRBAC lists the effective permissions of cfg's user in each namespace with
// SelfSubjectRulesReview, and fails on a wildcard, on any access to Secrets, and on a
// write permission that no code path in writeUses needs.
func checkRBAC(t *testing.T, ctx context.Context, cfg *rest.Config, namespaces ...string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]writeUse{}
	for _, u := range writeUses {
		b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), u.file))
		if err != nil || !strings.Contains(string(b), u.evidence) {
			// Moved code still counts: look for it in the operator's sources.
			where := findInSources(t, u.evidence)
			if where == "" {
				t.Errorf("writeUses: %s %s/%s names code %q (in %s) that is not in the operator's sources any more: is the permission still needed?", u.verb, u.group, u.resource, u.evidence, u.file)
				continue
			}
			t.Logf("writeUses: the code of %s %s/%s moved from %s to %s", u.verb, u.group, u.resource, u.file, where)
		}
		used[u.group+"/"+u.resource+"/"+u.verb] = u
	}
	granted := map[string]bool{}
	for _, ns := range namespaces {
		review, err := cs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
			&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectRulesReview in %s: %v", ns, err)
		}
		if review.Status.Incomplete {
			t.Errorf("the rules review in %s is incomplete: %s", ns, review.Status.EvaluationError)
		}
		for _, r := range review.Status.NonResourceRules {
			if slices.Contains(r.Verbs, "*") || slices.Contains(r.NonResourceURLs, "*") {
				t.Errorf("wildcard non-resource rule in %s: %v", ns, r)
			}
		}
		for _, r := range review.Status.ResourceRules {
			if slices.Contains(r.Verbs, "*") || slices.Contains(r.APIGroups, "*") || slices.Contains(r.Resources, "*") {
				t.Errorf("wildcard rule in %s: %+v", ns, r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					if g == "" && (res == "secrets" || strings.HasPrefix(res, "secrets/")) {
						t.Errorf("the operator may %v secrets in %s: it never reads Secrets (they hold private keys)", r.Verbs, ns)
					}
					for _, v := range r.Verbs {
						if !slices.Contains(writeVerbs, v) {
							continue
						}
						key := g + "/" + res + "/" + v
						granted[key] = true
						if everyUser[key] {
							continue
						}
						if _, ok := used[key]; !ok {
							t.Errorf("the operator may %s %s (group %q) in %s, and no code path in writeUses needs it: remove it from the RBAC, or add its code path to writeUses", v, res, g, ns)
						}
					}
				}
			}
		}
	}
	for key, u := range used {
		if !granted[key] {
			t.Errorf("%s is not granted, but %s needs it (%s)", key, u.file, u.why)
		}
	}
	if t.Failed() {
		t.Logf("granted writes: %v", fmt.Sprint(keys(granted)))
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// findInSources returns the first non-test Go file of the operator (cmd, controllers,
// internal, webhooks) that contains code, or "".
func findInSources(t *testing.T, code string) string {
	t.Helper()
	found := ""
	for _, dir := range []string{"cmd", "controllers", "internal", "webhooks"} {
		_ = filepath.WalkDir(filepath.Join(testenv.RepoRoot(), dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || found != "" || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
				strings.Contains(path, string(filepath.Separator)+"testenv"+string(filepath.Separator)) {
				return err
			}
			b, err := os.ReadFile(path)
			if err == nil && strings.Contains(string(b), code) {
				found, _ = filepath.Rel(testenv.RepoRoot(), path)
			}
			return err
		})
	}
	return found
}

package identity

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const operatorUser = "system:serviceaccount:" + operatorNamespace + ":meshtls-operator"

// rules reads the rules of the roles in config/rbac that the operator's ServiceAccount
// is bound to.
func rules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	var out []rbacv1.PolicyRule
	for _, f := range []string{"role.yaml", "leader_election_role.yaml", "metrics_auth_role.yaml"} {
		objs, err := testenv.ReadObjects(filepath.Join(testenv.RepoRoot(), "config", "rbac", f))
		must(t, err)
		for _, o := range objs {
			var role struct {
				Rules []rbacv1.PolicyRule `json:"rules"`
			}
			must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role))
			out = append(out, role.Rules...)
		}
	}
	return out
}

// TestOperatorRBAC: the whole package runs the manager with a token of its own
// ServiceAccount bound to the generated ClusterRole, so a missing permission fails the
// tests that need it (and the cache sync below). Excess is checked here: no Secret
// verb, no wildcard, no escalate or impersonate, bind on meshtls-proxy only, and the
// identity kinds get exactly the verbs the identity controllers use.
func TestOperatorRBAC(t *testing.T) {
	t.Run("the manager lists and watches everything it reads with its own RBAC", func(t *testing.T) {
		if !managerSynced {
			t.Fatal("the manager's cache did not sync with the operator's token: the generated role lacks a list or watch (run with MESHTLS_TEST_VERBOSE=1 to see which)")
		}
	})

	all := rules(t)
	t.Run("no Secret verbs, no wildcards, no escalate or impersonate, bind on meshtls-proxy only", func(t *testing.T) {
		for _, r := range all {
			desc := fmt.Sprintf("%v %v %v %v", r.APIGroups, r.Resources, r.Verbs, r.ResourceNames)
			if slices.Contains(r.Resources, "secrets") {
				t.Errorf("the operator may touch Secrets: %s", desc)
			}
			for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
				if slices.Contains(list, "*") {
					t.Errorf("wildcard: %s", desc)
				}
			}
			if slices.Contains(r.Verbs, "escalate") || slices.Contains(r.Verbs, "impersonate") {
				t.Errorf("escalate or impersonate: %s", desc)
			}
			if slices.Contains(r.Verbs, "bind") && (!slices.Equal(r.Resources, []string{"clusterroles"}) || !slices.Equal(r.ResourceNames, []string{"meshtls-proxy"}) || len(r.Verbs) != 1) {
				t.Errorf("bind beyond the ClusterRole meshtls-proxy: %s", desc)
			}
		}
	})

	t.Run("the identity kinds get exactly the verbs the identity controllers use", func(t *testing.T) {
		// Server-side apply is a patch; only Certificates are also updated (to drop
		// identity fields someone added by hand, which an apply cannot remove).
		rw := []string{"create", "delete", "get", "list", "patch", "watch"}
		ro := []string{"get", "list", "watch"}
		want := map[string][]string{
			"cert-manager.io/certificates":                  {"create", "delete", "get", "list", "patch", "update", "watch"},
			"cert-manager.io/certificaterequests":           ro,
			"cert-manager.io/issuers":                       ro,
			"cert-manager.io/clusterissuers":                ro,
			"/configmaps":                                   rw,
			"rbac.authorization.k8s.io/rolebindings":        rw,
			"rbac.authorization.k8s.io/clusterroles":        {"bind"},
			"rbac.authorization.k8s.io/roles":               nil,
			"rbac.authorization.k8s.io/clusterrolebindings": nil,
			"/secrets":                            nil,
			"/serviceaccounts":                    nil,
			"authentication.k8s.io/tokenrequests": nil,
			"certificates.k8s.io/certificatesigningrequests": nil,
		}
		got := map[string][]string{}
		for _, r := range all {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					got[g+"/"+res] = append(got[g+"/"+res], r.Verbs...)
				}
			}
		}
		for key, verbs := range want {
			have := slices.Clone(got[key])
			slices.Sort(have)
			have = slices.Compact(have)
			if !slices.Equal(have, verbs) {
				t.Errorf("%s: the operator may %v, want exactly %v", key, have, verbs)
			}
		}
	})

	t.Run("the API server agrees", func(t *testing.T) {
		ctx := context.Background()
		for _, tc := range []struct {
			attrs authorizationv1.ResourceAttributes
			allow bool
		}{
			{authorizationv1.ResourceAttributes{Namespace: "id-issue", Verb: "get", Resource: "secrets"}, false},
			{authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets"}, false},
			{authorizationv1.ResourceAttributes{Verb: "watch", Resource: "secrets"}, false},
			{authorizationv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "meshtls-proxy"}, true},
			{authorizationv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"}, false},
			{authorizationv1.ResourceAttributes{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "meshtls-proxy"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "id-issue", Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "rolebindings"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "id-issue", Verb: "create", Group: "cert-manager.io", Resource: "certificates"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "id-issue", Verb: "create", Group: "cert-manager.io", Resource: "certificaterequests"}, false},
		} {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: operatorUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
				ResourceAttributes: &tc.attrs,
			}}
			must(t, k8s.Create(ctx, sar))
			if sar.Status.Allowed != tc.allow {
				t.Errorf("%s %s/%s %s: allowed=%v, want %v (%s)", tc.attrs.Verb, tc.attrs.Group, tc.attrs.Resource, strings.TrimSpace(tc.attrs.Name), sar.Status.Allowed, tc.allow, sar.Status.Reason)
			}
		}
	})
}

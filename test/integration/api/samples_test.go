package api

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// TestSamplesAccepted applies every sample in config/samples, as a user would, and
// requires the API server to accept each one.
func TestSamplesAccepted(t *testing.T) {
	ctx := context.Background()
	ensureNamespace(t, "shop")
	paths, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "security_*.yaml"))
	if err != nil || len(paths) < 5 {
		t.Fatalf("want a sample for each of the five kinds in config/samples, found %v (%v)", paths, err)
	}
	kinds := map[string]bool{}
	for _, path := range paths {
		objs, err := testenv.ReadObjects(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			kinds[obj.GetKind()] = true
			if err := k8sClient().Create(ctx, obj); err != nil {
				t.Errorf("sample %s (%s %s) refused: %v", filepath.Base(path), obj.GetKind(), obj.GetName(), err)
				continue
			}
			t.Cleanup(func() { _ = k8sClient().Delete(context.Background(), obj) })
		}
	}
	for _, kind := range []string{"MeshMTLSPolicy", "NamespaceMTLSPolicy", "WorkloadMTLSPolicy", "PodProxyConfig", "MTLSRollout"} {
		if !kinds[kind] {
			t.Errorf("no sample of %s in config/samples", kind)
		}
	}
}

// TestKubectlGetMeshtls runs the built kubectl against the API server: `kubectl get
// meshtls -A` lists all five kinds, each with its printer columns, and the short
// names resolve.
func TestKubectlGetMeshtls(t *testing.T) {
	ctx := context.Background()
	ensureNamespace(t, "shop")
	for _, path := range []string{"security_v1alpha1_meshmtlspolicy.yaml", "security_v1alpha1_namespacemtlspolicy.yaml",
		"security_v1alpha1_workloadmtlspolicy.yaml", "security_v1alpha1_podproxyconfig.yaml", "security_v1alpha1_mtlsrollout.yaml"} {
		objs, err := testenv.ReadObjects(filepath.Join(testenv.RepoRoot(), "config", "samples", path))
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			if err := k8sClient().Create(ctx, obj); err != nil {
				t.Fatalf("failed to create %s %s: %v", obj.GetKind(), obj.GetName(), err)
			}
			t.Cleanup(func() { _ = k8sClient().Delete(context.Background(), obj) })
		}
	}

	out := kubectl(t, "get", "meshtls", "-A")
	// One table per kind, each with its own header line and a row of the sample.
	for _, want := range []struct{ header, row string }{
		{`MODE\s+MINIMUM\s+TRUST DOMAIN\s+ISSUER\s+PODS\s+READY\s+AGE`, `meshmtlspolicy.security.meshtls.io/default\s+PERMISSIVE\s+DISABLE\s+cluster.local\s+mesh-ca`},
		{`NAMESPACE\s+NAME\s+MODE\s+EFFECTIVE\s+PODS\s+READY\s+AGE`, `shop\s+namespacemtlspolicy.security.meshtls.io/default\s+STRICT`},
		{`NAMESPACE\s+NAME\s+MODE\s+PODS\s+CONFLICTED\s+READY\s+AGE`, `shop\s+workloadmtlspolicy.security.meshtls.io/checkout\s+STRICT`},
		{`NAMESPACE\s+NAME\s+MODE\s+PORTS\s+IDENTITY\s+CERT\s+APPLIED\s+AGE`, `shop\s+podproxyconfig.security.meshtls.io/finance-7d9f8-x2x4q\s+STRICT\s+.*8080.*spiffe://cluster.local/ns/shop/sa/finance`},
		{`NAME\s+TARGET\s+PHASE\s+PAUSED\s+READY\s+AGE`, `mtlsrollout.security.meshtls.io/shop-to-strict\s+STRICT`},
	} {
		if !regexp.MustCompile(want.header).MatchString(out) {
			t.Errorf("`kubectl get meshtls -A` has no header %q:\n%s", want.header, out)
		}
		if !regexp.MustCompile(want.row).MatchString(out) {
			t.Errorf("`kubectl get meshtls -A` has no row %q:\n%s", want.row, out)
		}
	}

	names := kubectl(t, "get", "mmp,nmp,wmp,ppc,mro", "-A", "-o", "name")
	for _, want := range []string{"meshmtlspolicy.security.meshtls.io/default", "namespacemtlspolicy.security.meshtls.io/default",
		"workloadmtlspolicy.security.meshtls.io/finance", "podproxyconfig.security.meshtls.io/finance-7d9f8-x2x4q",
		"mtlsrollout.security.meshtls.io/shop-to-strict"} {
		if !strings.Contains(names, want) {
			t.Errorf("short names: %q missing from:\n%s", want, names)
		}
	}

	explain := kubectl(t, "explain", "workloadmtlspolicy.spec.portLevelMTLS")
	if !strings.Contains(explain, "own ports 15000-15099 may not be named") {
		t.Errorf("`kubectl explain` lacks the field documentation:\n%s", explain)
	}
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	cmd, err := env.Kubectl(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if os.Getenv("MESHTLS_TEST_VERBOSE") != "" {
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

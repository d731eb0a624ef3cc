package manifests

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/meshtls/meshtls-operator/internal/bundle"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// TestBundleUpToDate fails when bundle/ is not what `make bundle` would write from
// config/, so the OLM bundle cannot drift from the kustomize install.
func TestBundleUpToDate(t *testing.T) {
	want, err := bundle.Generate(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	got, err := bundle.Read(filepath.Join(testenv.RepoRoot(), "bundle"))
	if err != nil {
		t.Fatalf("bundle/ is missing: run `make bundle`: %v", err)
	}
	for path, b := range want {
		if string(got[path]) != string(b) {
			t.Errorf("bundle/%s is stale: run `make bundle` and commit", path)
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("bundle/%s is not generated any more: run `make bundle`", path)
		}
	}
}

// TestBundleCSV checks what OLM reads from the ClusterServiceVersion.
func TestBundleCSV(t *testing.T) {
	files, err := bundle.Generate(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	csv, err := bundle.Objects(files["manifests/meshtls-operator.clusterserviceversion.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	spec := csv["spec"].(map[string]any)
	if csv["kind"] != "ClusterServiceVersion" || csv["metadata"].(map[string]any)["name"] != "meshtls-operator.v"+bundle.Version || spec["version"] != bundle.Version {
		t.Errorf("CSV identity: kind %v, name %v, version %v", csv["kind"], csv["metadata"].(map[string]any)["name"], spec["version"])
	}

	var crdFiles, owned []string
	for path := range files {
		if strings.HasSuffix(path, ".security.meshtls.io.yaml") {
			crdFiles = append(crdFiles, strings.TrimSuffix(strings.TrimPrefix(path, "manifests/"), ".yaml"))
		}
	}
	for _, o := range spec["customresourcedefinitions"].(map[string]any)["owned"].([]any) {
		owned = append(owned, o.(map[string]any)["name"].(string))
	}
	sort.Strings(crdFiles)
	if len(owned) != 5 || strings.Join(owned, ",") != strings.Join(crdFiles, ",") {
		t.Errorf("owned CRDs %v do not match the CRD manifests %v", owned, crdFiles)
	}

	install := spec["install"].(map[string]any)["spec"].(map[string]any)
	deployments := install["deployments"].([]any)
	if len(deployments) != 1 {
		t.Fatalf("want one deployment, got %d", len(deployments))
	}
	deployment := deployments[0].(map[string]any)
	rules, _ := json.Marshal(install["clusterPermissions"])
	if !strings.Contains(string(rules), "podproxyconfigs") {
		t.Errorf("cluster permissions lack the operator's rules: %s", rules)
	}

	defs := spec["webhookdefinitions"].([]any)
	if len(defs) != 6 {
		t.Fatalf("want 6 webhook definitions (2 injection, 4 validation), got %d", len(defs))
	}
	for _, d := range defs {
		w := d.(map[string]any)
		if w["deploymentName"] != deployment["name"] || w["containerPort"] != float64(9443) || w["sideEffects"] != "None" ||
			w["failurePolicy"] != "Fail" || w["webhookPath"] == "" {
			t.Errorf("webhook definition %v: %v", w["generateName"], w)
		}
		if w["type"] == "MutatingAdmissionWebhook" && w["objectSelector"] == nil {
			t.Errorf("injection webhook %v has no objectSelector, which OLM leaves alone", w["generateName"])
		}
	}

	var examples []map[string]any
	if err := json.Unmarshal([]byte(csv["metadata"].(map[string]any)["annotations"].(map[string]any)["alm-examples"].(string)), &examples); err != nil {
		t.Fatalf("alm-examples is not a JSON list: %v", err)
	}
	if len(examples) < 4 {
		t.Errorf("want a sample of each user-written kind in alm-examples, got %d", len(examples))
	}
	if !strings.Contains(string(files["metadata/annotations.yaml"]), "operators.operatorframework.io.bundle.package.v1: meshtls-operator") {
		t.Errorf("bundle metadata: %s", files["metadata/annotations.yaml"])
	}
}

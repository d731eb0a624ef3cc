package manifests

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	apimanifests "github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"

	"github.com/meshtls/meshtls-operator/internal/bundle"
	"github.com/meshtls/meshtls-operator/internal/inject"
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

// TestBundleValidates runs on bundle/ the validators that
// `operator-sdk bundle validate ./bundle --select-optional suite=operatorframework`
// runs: the default ones (CSV, CRD, bundle) and the operatorframework suite
// (operatorhub, standard capabilities and categories, deprecated APIs, good
// practices), for the Kubernetes version the project is built against. Errors fail;
// warnings are printed.
//
// Expected warning: the deprecated-APIs check names the rule on "events" in
// events.k8s.io, because RBAC rules carry no version and events.k8s.io/v1beta1 was
// removed in 1.25; the operator uses events.k8s.io/v1.
func TestBundleValidates(t *testing.T) {
	b, err := apimanifests.GetBundleFromDir(filepath.Join(testenv.RepoRoot(), "bundle"))
	if err != nil {
		t.Fatalf("OLM cannot load bundle/: %v", err)
	}
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator,
		validation.GoodPracticesValidator,
	)
	k8sVersion := strings.TrimPrefix(testenv.KubernetesVersion, "v")
	results := validators.Validate(b, map[string]string{"k8s-version": k8sVersion})
	checked := 0
	for _, r := range results {
		checked++
		for _, e := range r.Errors {
			t.Errorf("bundle validation error (%s): %s", r.Name, e)
		}
		for _, w := range r.Warnings {
			t.Logf("bundle validation warning (%s): %s", r.Name, w)
		}
	}
	if checked < 6 {
		t.Errorf("only %d validation results: the validators did not run on the bundle", checked)
	}
}

func generatedCSV(t *testing.T) map[string]any {
	t.Helper()
	files, err := bundle.Generate(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	csv, err := bundle.Objects(files["manifests/"+bundle.Package+".clusterserviceversion.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	return csv
}

// TestBundleCSV checks what OLM and the console read from the ClusterServiceVersion.
func TestBundleCSV(t *testing.T) {
	files, err := bundle.Generate(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	csv, err := bundle.Objects(files["manifests/meshtls-operator.clusterserviceversion.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	meta := csv["metadata"].(map[string]any)
	annotations := meta["annotations"].(map[string]any)
	spec := csv["spec"].(map[string]any)
	if csv["kind"] != "ClusterServiceVersion" || meta["name"] != "meshtls-operator.v"+bundle.Version || spec["version"] != bundle.Version {
		t.Errorf("CSV identity: kind %v, name %v, version %v", csv["kind"], meta["name"], spec["version"])
	}

	// Owned CRDs, each with a descriptor for every spec and status field.
	crds := map[string]map[string]any{}
	for path, b := range files {
		if strings.HasSuffix(path, ".security.meshtls.io.yaml") {
			obj, err := bundle.Objects(b)
			if err != nil {
				t.Fatal(err)
			}
			crds[obj["metadata"].(map[string]any)["name"].(string)] = obj
		}
	}
	owned := spec["customresourcedefinitions"].(map[string]any)["owned"].([]any)
	if len(owned) != len(crds) || len(owned) != 5 {
		t.Errorf("%d owned CRDs for %d CRD manifests, want 5", len(owned), len(crds))
	}
	for _, o := range owned {
		entry := o.(map[string]any)
		crd, ok := crds[entry["name"].(string)]
		if !ok {
			t.Errorf("owned CRD %v has no manifest", entry["name"])
			continue
		}
		if entry["description"] == "" || entry["displayName"] == "" || entry["version"] != "v1alpha1" {
			t.Errorf("owned CRD %v: description %q, displayName %q, version %v", entry["name"], entry["description"], entry["displayName"], entry["version"])
		}
		schema := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)
		for _, part := range []string{"spec", "status"} {
			fields := schema[part].(map[string]any)["properties"].(map[string]any)
			described := map[string]bool{}
			list, _ := entry[part+"Descriptors"].([]any)
			for _, d := range list {
				desc := d.(map[string]any)
				path := desc["path"].(string)
				described[strings.Split(path, ".")[0]] = true
				if desc["displayName"] == "" || desc["description"] == "" {
					t.Errorf("%v %sDescriptor %s has no display name or description", entry["kind"], part, path)
				}
			}
			for field := range fields {
				if !described[field] {
					t.Errorf("%v: %s.%s has no %sDescriptor", entry["kind"], part, field, part)
				}
			}
		}
	}

	// Install strategy: the manager with the bundle's images; relatedImages name both.
	install := spec["install"].(map[string]any)["spec"].(map[string]any)
	deployments := install["deployments"].([]any)
	if len(deployments) != 1 {
		t.Fatalf("want one deployment, got %d", len(deployments))
	}
	deployment := deployments[0].(map[string]any)
	container := deployment["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	args := fmt.Sprint(container["args"])
	if container["image"] != bundle.Image || !strings.Contains(args, "--proxy-image="+bundle.ProxyImage) {
		t.Errorf("manager container: image %v, args %v; want image %s and --proxy-image=%s", container["image"], args, bundle.Image, bundle.ProxyImage)
	}
	if _, ok := deployment["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["volumes"]; ok {
		t.Errorf("the CSV deployment keeps the cert-manager volume: OLM mounts the webhook certificate itself")
	}
	related := map[string]string{}
	for _, r := range spec["relatedImages"].([]any) {
		related[r.(map[string]any)["name"].(string)] = r.(map[string]any)["image"].(string)
	}
	if related["manager"] != bundle.Image || related["proxy"] != bundle.ProxyImage || annotations["containerImage"] != bundle.Image {
		t.Errorf("relatedImages %v, containerImage %v", related, annotations["containerImage"])
	}
	// The bundle's proxy image is the release of the image the manager injects by
	// default: same repository, release tag instead of the development one.
	repo := func(image string) string { return image[:strings.LastIndex(image, ":")] }
	if repo(bundle.ProxyImage) != repo(inject.DefaultConfig().ProxyImage) {
		t.Errorf("bundle proxy image %s is not of the repository the manager injects by default (%s)", bundle.ProxyImage, inject.DefaultConfig().ProxyImage)
	}
	rules, _ := json.Marshal(install["clusterPermissions"])
	if !strings.Contains(string(rules), "podproxyconfigs") {
		t.Errorf("cluster permissions lack the operator's rules: %s", rules)
	}
	// The proxies' ClusterRole ships beside the CSV, and is not the operator's.
	if strings.Contains(string(rules), "podproxyconfigs/status") || files["manifests/meshtls-proxy.clusterrole.yaml"] == nil {
		t.Errorf("the proxies' ClusterRole meshtls-proxy must be a bundle manifest of its own, not the operator's permissions: %s", rules)
	}

	// Console metadata.
	if spec["minKubeVersion"] != bundle.MinKubeVersion || !regexp.MustCompile(`^1\.\d+\.\d+$`).MatchString(bundle.MinKubeVersion) {
		t.Errorf("minKubeVersion %v", spec["minKubeVersion"])
	}
	modes := map[string]bool{}
	for _, m := range spec["installModes"].([]any) {
		modes[m.(map[string]any)["type"].(string)] = m.(map[string]any)["supported"].(bool)
	}
	if len(modes) != 4 || !modes["AllNamespaces"] || modes["OwnNamespace"] || modes["SingleNamespace"] || modes["MultiNamespace"] {
		t.Errorf("install modes %v: the operator is cluster-wide, AllNamespaces only", modes)
	}
	icons := spec["icon"].([]any)
	svg, err := base64.StdEncoding.DecodeString(icons[0].(map[string]any)["base64data"].(string))
	if err != nil || icons[0].(map[string]any)["mediatype"] != "image/svg+xml" || !strings.Contains(string(svg), "<svg") {
		t.Errorf("icon is not an SVG: %v", err)
	}
	for _, key := range []string{"maintainers", "links", "provider", "keywords", "description", "maturity"} {
		if spec[key] == nil || spec[key] == "" {
			t.Errorf("CSV spec.%s is empty", key)
		}
	}
	if annotations["capabilities"] != "Basic Install" || annotations["operatorframework.io/suggested-namespace"] != "meshtls-system" {
		t.Errorf("annotations: %v", annotations)
	}
	if !strings.Contains(spec["description"].(string), "kubectl apply --server-side -k config/guard") {
		t.Errorf("the description does not say how to install the guard OLM cannot install")
	}

	// Webhooks: the four policy validators and the pod-label injector.
	defs := spec["webhookdefinitions"].([]any)
	var names []string
	for _, d := range defs {
		w := d.(map[string]any)
		names = append(names, w["generateName"].(string))
		if w["deploymentName"] != deployment["name"] || w["containerPort"] != float64(9443) || w["sideEffects"] != "None" ||
			w["failurePolicy"] != "Fail" || w["webhookPath"] == "" {
			t.Errorf("webhook definition %v: %v", w["generateName"], w)
		}
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "pod.inject.meshtls.io,vmeshmtlspolicy.meshtls.io,vmtlsrollout.meshtls.io,vnamespacemtlspolicy.meshtls.io,vworkloadmtlspolicy.meshtls.io" {
		t.Errorf("webhook definitions %s", got)
	}

	// alm-examples: a sample of each kind users write; none of PodProxyConfig, which
	// the operator writes and the console hides.
	var examples []map[string]any
	if err := json.Unmarshal([]byte(annotations["alm-examples"].(string)), &examples); err != nil {
		t.Fatalf("alm-examples is not a JSON list: %v", err)
	}
	kinds := map[string]bool{}
	for _, e := range examples {
		kinds[e["kind"].(string)] = true
	}
	for _, k := range []string{"MeshMTLSPolicy", "NamespaceMTLSPolicy", "WorkloadMTLSPolicy", "MTLSRollout"} {
		if !kinds[k] {
			t.Errorf("alm-examples has no %s", k)
		}
	}
	if kinds["PodProxyConfig"] || !strings.Contains(annotations["operators.operatorframework.io/internal-objects"].(string), "podproxyconfigs.security.meshtls.io") {
		t.Errorf("PodProxyConfig must be an internal object without an example")
	}
	if !strings.Contains(string(files["metadata/annotations.yaml"]), "operators.operatorframework.io.bundle.package.v1: meshtls-operator") {
		t.Errorf("bundle metadata: %s", files["metadata/annotations.yaml"])
	}
}

// TestBundleDockerfileLabels: the bundle image's labels must say what
// metadata/annotations.yaml says (OLM reads either).
func TestBundleDockerfileLabels(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "bundle.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bundle.MetadataAnnotations() {
		if !strings.Contains(string(b), "\nLABEL "+kv[0]+"="+kv[1]+"\n") {
			t.Errorf("bundle.Dockerfile lacks LABEL %s=%s", kv[0], kv[1])
		}
	}
}

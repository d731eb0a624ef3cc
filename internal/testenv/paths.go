// Package testenv is the project's local control plane: a real kube-apiserver,
// kube-controller-manager and etcd (built from source at the pinned Kubernetes version
// and cached outside the repository), this project's CRDs and cert-manager's, and
// cert-manager's real controllers running as a process. Integration tests and
// `make run` (without a cluster) both start it from here.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Pinned versions. KubernetesVersion matches k8s.io/client-go in go.mod, and
// CertManagerVersion the cert-manager module; hack/build-controlplane.sh builds the
// same ones.
const (
	KubernetesVersion  = "v1.37.2"
	EtcdVersion        = "v3.6.16"
	CertManagerVersion = "v1.21.2"
	certManagerModule  = "github.com/cert-manager/cert-manager"
)

// CacheDir is where built binaries are kept: $MESHTLS_CACHE, or ~/.cache/meshtls.
func CacheDir() string {
	if dir := os.Getenv("MESHTLS_CACHE"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "meshtls-cache")
	}
	return filepath.Join(home, ".cache", "meshtls")
}

// RepoRoot is the directory of this module's go.mod.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir is the directory holding kube-apiserver, kube-controller-manager, etcd and
// kubectl: KUBEBUILDER_ASSETS
// when it is set, else the cache directory hack/build-controlplane.sh fills.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(CacheDir(), "k8s-"+KubernetesVersion)
	}
	for _, bin := range []string{"kube-apiserver", "kube-controller-manager", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s is missing from %s: build the local control plane with `make controlplane` (takes 15-25 minutes once, then cached)", bin, dir)
		}
	}
	return dir, nil
}

// KubectlPath is the kubectl built with the control plane.
func KubectlPath() (string, error) {
	dir, err := AssetsDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "kubectl"), nil
}

// CRDDir is the directory of this project's generated CRDs.
func CRDDir() string {
	return filepath.Join(RepoRoot(), "config", "crd", "bases")
}

// CertManagerCRDDir is deploy/crds of the cert-manager module that go.mod pins.
func CertManagerCRDDir() (string, error) {
	dir, err := goList(certManagerModule)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "deploy", "crds"), nil
}

// goList returns the directory of a module in the module cache, downloading it when
// needed.
func goList(module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil && strings.TrimSpace(string(out)) == "" {
		download := exec.Command("go", "mod", "download", module)
		download.Dir = RepoRoot()
		if dlOut, dlErr := download.CombinedOutput(); dlErr != nil {
			return "", fmt.Errorf("failed to download %s: %v: %s", module, dlErr, dlOut)
		}
		out, err = cmd.Output()
	}
	if err != nil {
		return "", fmt.Errorf("failed to locate module %s: %v: %s", module, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

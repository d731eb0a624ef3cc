// Package install installs meshtls-operator the way a cluster administrator does and
// proves each install path on the local control plane (kube-apiserver, etcd,
// kube-controller-manager, cert-manager):
//
//   - from Git: config/default rendered with the kustomize Go API and applied with
//     server-side apply, as `kubectl apply --server-side -k config/default` does;
//   - from OperatorHub: the objects OLM makes from the bundle's CSV (its install
//     strategy's ServiceAccount, RBAC and Deployment, its webhookdefinitions), so the
//     bundle cannot drift from config/.
//
// In both, the manager is the cmd/manager binary started with the Deployment's own
// arguments and environment, authenticated with a token of the manager's
// ServiceAccount (TokenRequest, bound to one of the Deployment's pods, as the kubelet
// does): a permission that config/rbac or the CSV lacks fails the test. What a cluster
// has and this one does not, and how the tests stand in for it:
//   - no kubelet: the Deployment's pods stay Pending, so the manager runs beside the
//     control plane as a process; it gets the pod's private things as a pod would,
//     but on this machine: its listen addresses (a free loopback port each, where a
//     pod has its own network namespace) and its webhook certificate directory (a
//     temporary directory, where a pod mounts a volume);
//   - no Service routing (no kube-proxy, no pod IPs): the webhook configurations are
//     applied with their clientConfig turned from the Service into the manager's
//     loopback URL, with a CA the test makes; cert-manager's CA injector (which would
//     fill caBundle) is not run for the same reason. Everything else is applied as
//     rendered.
package install

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

var (
	env *testenv.Env
	// managerBinary is cmd/manager, built once.
	managerBinary string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "meshtls-install-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	managerBinary = filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", managerBinary, "./cmd/manager")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "failed to build cmd/manager: %v\n%s", err, out)
		return 1
	}

	env, err = testenv.Start(ctx, testenv.Options{CertManager: true, Progress: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		return 1
	}
	defer env.Stop()
	// The local control plane comes with this project's CRDs; a cluster that has
	// never seen the operator does not. Remove them so that the install must bring
	// them.
	if err := removeProjectCRDs(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func removeProjectCRDs(ctx context.Context) error {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("apiextensions.k8s.io/v1")
	list.SetKind("CustomResourceDefinitionList")
	if err := env.Client.List(ctx, list); err != nil {
		return err
	}
	var ours []*unstructured.Unstructured
	for i := range list.Items {
		if group, _, _ := unstructured.NestedString(list.Items[i].Object, "spec", "group"); group == "security.meshtls.io" {
			ours = append(ours, &list.Items[i])
		}
	}
	for _, crd := range ours {
		if err := env.Client.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, crd := range ours {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(crd.GroupVersionKind())
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(crd), u); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		return true, nil
	})
}

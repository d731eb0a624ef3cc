package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshtls/meshtls-operator/internal/scheme"
)

// MeshCAIssuer is the CA ClusterIssuer that Start makes ready when it runs cert-manager
// (config/samples/issuer/mesh-ca.yaml).
const MeshCAIssuer = "mesh-ca"

// Options says what to start besides kube-apiserver and etcd.
type Options struct {
	// NoControllerManager leaves kube-controller-manager out, and with it the
	// ServiceAccount admission plugin (which refuses pods until the ServiceAccount
	// controller has made their ServiceAccount). Without it nothing is garbage
	// collected, namespaces stay Terminating and Deployments make no pods: only for
	// a test that measures the API server alone.
	NoControllerManager bool
	// CertManager starts cert-manager's controllers and makes the mesh-ca
	// ClusterIssuer ready.
	CertManager bool
	// Dir keeps the kubeconfig and the process logs; a temporary directory when empty.
	Dir string
	// Progress receives progress lines (builds, start-up); nil discards them.
	Progress io.Writer
	// WebhookInstallOptions are passed to envtest (webhook configurations to install,
	// pointing at a local server).
	WebhookInstallOptions envtest.WebhookInstallOptions
}

// Env is a running local control plane.
type Env struct {
	// Config is an admin rest.Config for the API server.
	Config *rest.Config
	// Client is an admin client with this project's, client-go's and no other scheme.
	Client client.Client
	// Scheme holds client-go's kinds and this project's.
	Scheme *runtime.Scheme
	// KubeconfigPath is an admin kubeconfig file for kubectl and other processes.
	KubeconfigPath string
	// Dir holds the kubeconfig and the logs.
	Dir string
	// ControllerManagerLog is kube-controller-manager's log file; empty without it.
	ControllerManagerLog string

	env               *envtest.Environment
	certManager       *process
	controllerManager *process
	ownDir            bool
}

// Start starts etcd, kube-apiserver (with this project's and cert-manager's CRDs
// installed) and kube-controller-manager, and cert-manager when opts.CertManager.
// Stop it with Env.Stop.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	cmCRDs, err := CertManagerCRDDir()
	if err != nil {
		return nil, err
	}
	var cmBinary string
	if opts.CertManager {
		// Build (or find) the runner before starting anything, so a long first build
		// does not hold a running API server.
		if cmBinary, err = CertManagerBinary(progress); err != nil {
			return nil, err
		}
	}

	e := &Env{Dir: opts.Dir, Scheme: scheme.New()}
	if e.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "meshtls-testenv-"); err != nil {
			return nil, err
		}
		e.ownDir = true
	} else if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = e.Stop()
		}
	}()

	fmt.Fprintf(progress, "[controlplane %s] starting etcd and kube-apiserver %s\n", time.Now().Format(time.TimeOnly), KubernetesVersion)
	e.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{CRDDir(), cmCRDs},
		ErrorIfCRDPathMissing: true,
		Scheme:                e.Scheme,
		WebhookInstallOptions: opts.WebhookInstallOptions,
	}
	if !opts.NoControllerManager {
		configureForControllerManager(e.env)
	}
	if e.Config, err = e.env.Start(); err != nil {
		return nil, fmt.Errorf("failed to start kube-apiserver and etcd: %w", err)
	}
	e.Config.QPS, e.Config.Burst = 200, 400
	if e.Client, err = client.New(e.Config, client.Options{Scheme: e.Scheme}); err != nil {
		return nil, err
	}
	e.KubeconfigPath = filepath.Join(e.Dir, "kubeconfig")
	if err = os.WriteFile(e.KubeconfigPath, e.env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	if !opts.NoControllerManager {
		began := time.Now()
		fmt.Fprintf(progress, "[controlplane %s] starting kube-controller-manager %s\n", began.Format(time.TimeOnly), KubernetesVersion)
		if err = e.startControllerManager(ctx, assets); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "[controlplane %s] kube-controller-manager ready in %s\n", time.Now().Format(time.TimeOnly), time.Since(began).Round(time.Millisecond))
	}

	if opts.CertManager {
		fmt.Fprintf(progress, "[controlplane %s] starting cert-manager %s controllers\n", time.Now().Format(time.TimeOnly), CertManagerVersion)
		e.certManager, err = startProcess(filepath.Join(e.Dir, "cert-manager.log"), nil, cmBinary, "--kubeconfig", e.KubeconfigPath)
		if err != nil {
			return nil, err
		}
		if err = e.ApplyFile(ctx, filepath.Join(RepoRoot(), "config", "samples", "issuer", "mesh-ca.yaml")); err != nil {
			return nil, err
		}
		if err = e.WaitReady(ctx, "ClusterIssuer", "", MeshCAIssuer, 2*time.Minute); err != nil {
			return nil, fmt.Errorf("%w (cert-manager log: %s)", err, e.certManager.log)
		}
		fmt.Fprintf(progress, "[controlplane %s] cert-manager ready, ClusterIssuer %s Ready\n", time.Now().Format(time.TimeOnly), MeshCAIssuer)
	}
	return e, nil
}

// WebhookServing is where the API server expects the webhooks of
// Options.WebhookInstallOptions: serve them on Host:Port with the certificate in
// CertDir.
func (e *Env) WebhookServing() (host string, port int, certDir string) {
	o := e.env.WebhookInstallOptions
	return o.LocalServingHost, o.LocalServingPort, o.LocalServingCertDir
}

// Stop stops cert-manager, kube-controller-manager, kube-apiserver and etcd, and
// removes the temporary directory Start made.
func (e *Env) Stop() error {
	e.certManager.stop(10 * time.Second)
	e.controllerManager.stop(10 * time.Second)
	var err error
	if e.env != nil && e.env.ControlPlane.APIServer != nil {
		err = e.env.Stop()
	}
	if e.ownDir {
		_ = os.RemoveAll(e.Dir)
	}
	return err
}

// Kubectl returns a kubectl command, from the control plane's cache, that talks to
// this API server.
func (e *Env) Kubectl(ctx context.Context, args ...string) (*exec.Cmd, error) {
	kubectl, err := KubectlPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.KubeconfigPath)
	return cmd, nil
}

// ApplyFile creates (or leaves alone, when present) every object of a multi-document
// YAML file.
func (e *Env) ApplyFile(ctx context.Context, path string) error {
	objs, err := ReadObjects(path)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			err := e.Client.Create(ctx, obj)
			switch {
			case err == nil, apierrors.IsAlreadyExists(err):
				return true, nil
			case apierrors.IsNotFound(err), meta.IsNoMatchError(err):
				// A CRD that was just installed may not be served yet.
				return false, nil
			default:
				return false, err
			}
		})
		if err != nil {
			return fmt.Errorf("failed to create %s %s from %s: %w", obj.GetKind(), obj.GetName(), path, err)
		}
	}
	return nil
}

// ReadObjects decodes every object of a multi-document YAML file.
func ReadObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var objs []*unstructured.Unstructured
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", path, err)
		}
		obj := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &obj.Object); err != nil {
			return nil, fmt.Errorf("failed to decode %s: %w", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		objs = append(objs, obj)
	}
}

// WaitReady waits until a cert-manager object (or any object with conditions) has
// the condition Ready=True.
func (e *Env) WaitReady(ctx context.Context, kind, namespace, name string, timeout time.Duration) error {
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion("cert-manager.io/v1")
	obj.SetKind(kind)
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj); err != nil {
			last = err.Error()
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Ready" {
				last = fmt.Sprintf("Ready=%v: %v", m["status"], m["message"])
				if m["status"] == string(corev1.ConditionTrue) {
					return true, nil
				}
			}
		}
		if ended, err := e.certManager.exited(); ended {
			return false, fmt.Errorf("cert-manager exited: %v", err)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s %s/%s did not become Ready within %s (last: %s): %w", kind, namespace, name, timeout, last, err)
	}
	return nil
}

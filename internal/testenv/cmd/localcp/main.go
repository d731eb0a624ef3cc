// Command localcp starts the local control plane (etcd, kube-apiserver,
// kube-controller-manager, this project's CRDs, cert-manager and the mesh-ca
// ClusterIssuer), prints the KUBECONFIG line to use it, runs the command given after
// "--" against it, and stops everything on Ctrl-C or when that command ends. `make run`
// uses it when there is no cluster.
//
//	localcp [--dir DIR] [--webhooks] [--operator] [--prepare] [-- command args...]
//
// --webhooks installs the admission webhooks of config/webhook (their namespace and
// object selectors included) as URL webhooks that call https://127.0.0.1:<port>, with
// a serving certificate it makes; the command finds the port and the certificate
// directory in $MESHTLS_WEBHOOK_PORT and $MESHTLS_WEBHOOK_CERT_DIR.
//
// --operator installs what `make deploy` installs around the manager: the namespace
// meshtls-system, the operator's ServiceAccount and RBAC (config/rbac) and the
// PodProxyConfig guard (config/guard); the command finds a kubeconfig with a token of
// that ServiceAccount in $MESHTLS_OPERATOR_KUBECONFIG, so that the manager runs with
// exactly the permissions it has in a cluster.
//
// --prepare only builds (or finds) the cached binaries and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const (
	operatorNamespace      = "meshtls-system"
	operatorServiceAccount = "meshtls-operator"
	// operatorTokenLifetime bounds a `make run` session; restart it after that.
	operatorTokenLifetime = 7 * 24 * 3600
)

func main() {
	defaultDir := os.Getenv("MESHTLS_RUN_DIR")
	if defaultDir == "" {
		defaultDir = filepath.Join(testenv.CacheDir(), "run")
	}
	dir := flag.String("dir", defaultDir, "directory for the kubeconfig and the logs ($MESHTLS_RUN_DIR)")
	webhooks := flag.Bool("webhooks", false, "install config/webhook's admission webhooks, calling https://127.0.0.1:$MESHTLS_WEBHOOK_PORT with the certificate in $MESHTLS_WEBHOOK_CERT_DIR")
	operator := flag.Bool("operator", false, "install the operator's namespace, ServiceAccount, RBAC and PodProxyConfig guard, and write $MESHTLS_OPERATOR_KUBECONFIG for that ServiceAccount")
	prepare := flag.Bool("prepare", false, "only build the cached control-plane binaries, then exit")
	flag.Parse()
	if err := run(*dir, *prepare, *webhooks, *operator, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "localcp: %v\n", err)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func run(dir string, prepare, webhooks, operator bool, command []string) error {
	if prepare {
		if _, err := testenv.AssetsDir(); err != nil {
			return err
		}
		bin, err := testenv.CertManagerBinary(os.Stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "cert-manager runner: %s\n", bin)
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	opts := testenv.Options{CertManager: true, Dir: dir, Progress: os.Stderr}
	if webhooks {
		var err error
		if opts.WebhookInstallOptions, err = webhookOptions(); err != nil {
			return err
		}
	}
	env, err := testenv.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "localcp: stopping cert-manager, kube-controller-manager, kube-apiserver and etcd")
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "localcp: %v\n", err)
		}
	}()

	childEnv := append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
	if webhooks {
		host, port, certDir := env.WebhookServing()
		childEnv = append(childEnv, "MESHTLS_WEBHOOK_HOST="+host, "MESHTLS_WEBHOOK_PORT="+strconv.Itoa(port), "MESHTLS_WEBHOOK_CERT_DIR="+certDir)
		fmt.Fprintf(os.Stderr, "localcp: admission webhooks installed, calling https://%s:%d (serving certificate in %s)\n", host, port, certDir)
	}
	if operator {
		kubeconfig, err := installOperator(ctx, env, dir)
		if err != nil {
			return err
		}
		childEnv = append(childEnv, "MESHTLS_OPERATOR_KUBECONFIG="+kubeconfig)
		fmt.Fprintf(os.Stderr, "localcp: %s/%s with config/rbac and the PodProxyConfig guard installed; its kubeconfig: %s\n", operatorNamespace, operatorServiceAccount, kubeconfig)
	}

	kubectl, _ := testenv.KubectlPath()
	fmt.Printf("\nThe local control plane is up. In another shell:\n\n")
	fmt.Printf("  export KUBECONFIG=%s\n", env.KubeconfigPath)
	fmt.Printf("  alias kubectl=%s\n", kubectl)
	fmt.Printf("  kubectl get meshtls -A\n\n")
	fmt.Printf("There is no scheduler and no kubelet: pods are admitted (and injected) but stay Pending.\n")
	fmt.Printf("KUBECONFIG=%s\n", env.KubeconfigPath)
	fmt.Printf("Logs: %s. Ctrl-C stops everything.\n\n", dir)

	if len(command) == 0 {
		<-ctx.Done()
		return nil
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = childEnv
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %v: %w", command, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// Ctrl-C reached the whole foreground process group; make sure the command
		// ends before the API server does.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		return nil
	}
}

// webhookOptions renders config/webhook as `make deploy` does and has envtest point
// its Service references at 127.0.0.1 on a free port, with a CA and serving
// certificate it makes.
func webhookOptions() (envtest.WebhookInstallOptions, error) {
	opts := envtest.WebhookInstallOptions{LocalServingHost: "127.0.0.1"}
	objs, err := kustomize(filepath.Join(testenv.RepoRoot(), "config", "webhook"))
	if err != nil {
		return opts, err
	}
	for _, obj := range objs {
		switch obj.GetKind() {
		case "MutatingWebhookConfiguration":
			w := &admissionv1.MutatingWebhookConfiguration{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, w); err != nil {
				return opts, fmt.Errorf("config/webhook: %s: %w", obj.GetName(), err)
			}
			opts.MutatingWebhooks = append(opts.MutatingWebhooks, w)
		case "ValidatingWebhookConfiguration":
			w := &admissionv1.ValidatingWebhookConfiguration{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, w); err != nil {
				return opts, fmt.Errorf("config/webhook: %s: %w", obj.GetName(), err)
			}
			opts.ValidatingWebhooks = append(opts.ValidatingWebhooks, w)
		}
	}
	// envtest joins the host and the Service path with a slash of its own.
	trim := func(cc *admissionv1.WebhookClientConfig) {
		if cc.Service != nil && cc.Service.Path != nil {
			cc.Service.Path = ptr.To(strings.TrimPrefix(*cc.Service.Path, "/"))
		}
	}
	for _, c := range opts.MutatingWebhooks {
		for i := range c.Webhooks {
			trim(&c.Webhooks[i].ClientConfig)
		}
	}
	for _, c := range opts.ValidatingWebhooks {
		for i := range c.Webhooks {
			trim(&c.Webhooks[i].ClientConfig)
		}
	}
	if len(opts.MutatingWebhooks) == 0 || len(opts.ValidatingWebhooks) == 0 {
		return opts, fmt.Errorf("config/webhook renders no mutating or no validating webhook configuration")
	}
	return opts, nil
}

// installOperator creates the operator's namespace, applies config/rbac and
// config/guard, and writes a kubeconfig with a token of the operator's ServiceAccount.
func installOperator(ctx context.Context, env *testenv.Env, dir string) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}
	if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	for _, d := range []string{"rbac", "guard"} {
		objs, err := kustomize(filepath.Join(testenv.RepoRoot(), "config", d))
		if err != nil {
			return "", err
		}
		for _, obj := range objs {
			if err := env.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				return "", fmt.Errorf("config/%s: failed to create %s %s: %w", d, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return "", err
	}
	tr, err := kube.CoreV1().ServiceAccounts(operatorNamespace).CreateToken(ctx, operatorServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](operatorTokenLifetime)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to get a token of %s/%s: %w", operatorNamespace, operatorServiceAccount, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos[operatorServiceAccount] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["operator"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: operatorServiceAccount, Namespace: operatorNamespace}
	cfg.CurrentContext = "operator"
	path := filepath.Join(dir, "operator.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	return path, os.Chmod(path, 0o600)
}

// kustomize builds a kustomization directory, as `kubectl apply -k` does.
func kustomize(dir string) ([]*unstructured.Unstructured, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			return nil, err
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs, nil
}

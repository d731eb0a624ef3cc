// Package rollout tests MTLSRollout end to end against a real kube-apiserver, etcd and
// kube-controller-manager: the manager runs in-process as cmd/manager builds it, with
// its admission webhooks (pods are injected by the real injector), under the
// operator's own ServiceAccount and generated RBAC, with the PodProxyConfig guard
// installed. The test plays the proxies: each pod's "proxy" reads its PodProxyConfig
// and writes its status with a token bound to that very pod, as the real proxy does,
// so the guard lets it write its own status and nothing else.
package rollout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/operator"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const operatorNamespace = "meshtls-system"

var (
	env *testenv.Env
	k8s client.Client
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	level := zapcore.Level(2) // errors only
	if os.Getenv("MESHTLS_TEST_VERBOSE") != "" {
		level = -1
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))
	ctx := context.Background()
	var err error
	env, err = testenv.Start(ctx, testenv.Options{
		Progress:              os.Stderr,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")}},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client

	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The operator's ServiceAccount and generated ClusterRole, and the guard.
	for _, f := range []string{"config/rbac/service_account.yaml", "config/rbac/role.yaml", "config/rbac/role_binding.yaml", "config/guard/podproxyconfig_guard.yaml"} {
		if err := env.ApplyFile(ctx, filepath.Join(testenv.RepoRoot(), f)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// manager is a running operator manager.
type manager struct {
	cancel context.CancelFunc
	done   chan error
}

// startManager starts the operator as its Deployment would: its own ServiceAccount
// (impersonated), webhooks served where the API server calls them.
func startManager(t *testing.T) *manager {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + operatorNamespace + ":meshtls-operator",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
	}
	host, port, certDir := env.WebhookServing()
	mgr, _, err := operator.New(cfg, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true, OperatorNamespace: operatorNamespace,
		Webhooks: true, WebhookHost: host, WebhookPort: port, WebhookCertDir: certDir, Inject: inject.DefaultConfig(),
	})
	if err != nil {
		t.Fatalf("failed to build the manager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &manager{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(ctx) }()
	t.Cleanup(m.stop)
	if err := env.WaitForInjection(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return m
}

// stop stops the manager and waits until it has (it releases the webhook port).
func (m *manager) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
	}
}

// eventually retries check until it passes or timeout ends.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
	}
}

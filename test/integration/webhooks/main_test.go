// Package webhooks tests admission against a real kube-apiserver that calls the
// manager's webhooks over TLS (installed from config/webhook), with the manager and its
// index running in-process exactly as cmd/manager builds them.
package webhooks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

var (
	env      *testenv.Env
	k8s      client.Client
	warnings = &warningRecorder{}
	// warned is a client whose warnings land in the recorder.
	warned client.Client
)

// warningRecorder keeps the admission warnings the API server returns.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapErrorsOnly)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = warnings
	if warned, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	host, port, certDir := env.WebhookServing()
	mgr, _, err := operator.New(env.Config, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true,
		Webhooks: true, WebhookHost: host, WebhookPort: port, WebhookCertDir: certDir,
		Inject: inject.DefaultConfig(), OperatorNamespace: "meshtls-system",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to build the manager: %v\n", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "caches did not sync")
		return 1
	}
	if err := waitForWebhooks(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	cancel()
	<-done
	return code
}

const zapErrorsOnly = zapcore.ErrorLevel

// waitForWebhooks waits until the API server reaches the webhook server (a dry-run
// pod create through the injector succeeds).
func waitForWebhooks(ctx context.Context) error {
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe"}}); err != nil {
		return err
	}
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "webhook-probe", Name: "probe"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
		if last = k8s.Create(ctx, pod, client.DryRunAll); last == nil {
			return nil
		}
	}
	return fmt.Errorf("webhooks not reachable: %w", last)
}

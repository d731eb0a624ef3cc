// Package ha runs the shape the Deployment ships: two managers with leader election
// against one API server. Admission must answer from the replica that is not the
// leader, and the other replica must take over reconciliation when the leader stops.
package ha

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/operator"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type replica struct {
	name    string
	mgr     ctrl.Manager
	probe   string
	cancel  context.CancelFunc
	done    chan error
	started time.Time
}

func start(t *testing.T, env *testenv.Env, name string, o operator.Options) *replica {
	t.Helper()
	o.MetricsAddr, o.SkipNameValidation, o.LeaderElect = "0", true, true
	o.LeaderElectionNamespace = "meshtls-system"
	o.OperatorNamespace = "meshtls-system"
	o.Inject = inject.DefaultConfig()
	o.ProbeAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mgr, _, err := operator.New(env.Config, o)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{name: name, mgr: mgr, probe: "http://" + o.ProbeAddr + "/readyz", cancel: cancel, done: make(chan error, 1), started: time.Now()}
	go func() { r.done <- mgr.Start(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
	}
}

func (r *replica) leader() bool {
	select {
	case <-r.mgr.Elected():
		return true
	default:
		return false
	}
}

func (r *replica) ready() bool {
	resp, err := http.Get(r.probe)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func TestTwoReplicasWithLeaderElection(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	ctx := context.Background()
	env, err := testenv.Start(ctx, testenv.Options{
		Progress:              os.Stderr,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	k8s := env.Client
	for _, ns := range []string{"meshtls-system", "shop"} {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if ns == "shop" {
			n.Labels = map[string]string{"meshtls.io/inject": "enabled"}
		}
		if err := k8s.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}

	// The leader first, serving no webhooks; then the follower, which serves the
	// webhooks the API server calls: every admission goes to the replica that is
	// not the leader.
	leader := start(t, env, "leader", operator.Options{})
	eventually(t, 30*time.Second, "the first replica leads", func() error {
		if !leader.leader() {
			return fmt.Errorf("not elected yet")
		}
		return nil
	})
	host, port, certDir := env.WebhookServing()
	follower := start(t, env, "follower", operator.Options{Webhooks: true, WebhookHost: host, WebhookPort: port, WebhookCertDir: certDir})
	eventually(t, 30*time.Second, "the follower is ready (/readyz: index filled) without leading", func() error {
		if !follower.ready() {
			return fmt.Errorf("/readyz not OK")
		}
		return nil
	})
	if follower.leader() {
		t.Fatal("the follower must not lead while the leader runs")
	}

	t.Run("the follower refuses a conflict", func(t *testing.T) {
		wmp := func(name string) *v1alpha1.WorkloadMTLSPolicy {
			return &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
				Spec: v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pay"}}, Mode: v1alpha1.ModeStrict}}
		}
		eventually(t, 20*time.Second, "the first policy is admitted", func() error { return k8s.Create(ctx, wmp("pay")) })
		eventually(t, 20*time.Second, "an equal policy is refused", func() error {
			err := k8s.Create(ctx, wmp("pay-again"), client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), "same selector") {
				return fmt.Errorf("want refused as the same selector, got %v", err)
			}
			return nil
		})
	})

	t.Run("the follower injects a pod, and the leader reconciles it", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pay-1", Labels: map[string]string{"app": "pay"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/pay:1"}}}}
		if err := k8s.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if !inject.Injected(pod) {
			t.Fatal("the pod was not injected through the follower")
		}
		eventually(t, 20*time.Second, "the leader writes its PodProxyConfig", func() error {
			return k8s.Get(ctx, client.ObjectKeyFromObject(pod), &v1alpha1.PodProxyConfig{})
		})
	})

	t.Run("the follower takes over when the leader stops", func(t *testing.T) {
		stopped := time.Now()
		leader.stop()
		eventually(t, 60*time.Second, "the follower is elected", func() error {
			if !follower.leader() {
				return fmt.Errorf("not elected")
			}
			return nil
		})
		elected := time.Since(stopped)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pay-2", Labels: map[string]string{"app": "pay"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/pay:1"}}}}
		if err := k8s.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the new leader reconciles a new pod", func() error {
			ppc := &v1alpha1.PodProxyConfig{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), ppc); err != nil {
				return err
			}
			if ppc.Spec.Inbound.Mode != v1alpha1.ModeStrict {
				return fmt.Errorf("mode %s, want STRICT", ppc.Spec.Inbound.Mode)
			}
			return nil
		})
		t.Logf("takeover: elected %s after the leader stopped; first PodProxyConfig written %s after", elected.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		fmt.Printf("takeover time: elected after %s, reconciling after %s\n", elected.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
	})
}

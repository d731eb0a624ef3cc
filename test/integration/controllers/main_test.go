// Package controllers tests the operator end to end against a real kube-apiserver and
// etcd: the manager runs in-process, exactly as cmd/manager builds it, and the tests
// observe the PodProxyConfigs and policy statuses it writes. There is no
// kube-controller-manager here, so no garbage collector: the operator's own cleanup
// is what the tests see.
package controllers

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshtls/meshtls-operator/internal/operator"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

var (
	env *testenv.Env
	k8s client.Client
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var err error
	env, err = testenv.Start(ctx, testenv.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client

	mgr, _, err := operator.New(env.Config, operator.Options{MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to build the manager: %v\n", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v\n", err)
	}
	return code
}

func zapLevel() zapcore.Level {
	if os.Getenv("MESHTLS_TEST_VERBOSE") != "" {
		return -1
	}
	return 2 // errors only
}

// eventually retries check until it passes or the timeout ends.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func createNamespace(t *testing.T, name string, meshed bool) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if meshed {
		ns.Labels = map[string]string{"meshtls.io/inject": "enabled"}
	}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("failed to create namespace %s: %v", name, err)
	}
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("failed to create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

func newPod(ns, name string, labels map[string]string, ports ...int32) *corev1.Pod {
	c := corev1.Container{Name: "app", Image: "registry.example/app:1"}
	for _, p := range ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: p})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}, ServiceAccountName: "default"},
	}
}

// Command admission measures admission latency through the real API server, which
// calls the manager's webhooks over TLS: WorkloadMTLSPolicy creates in a namespace
// that already holds 1,000 workload policies and 5,000 meshed pods, and pod creates
// with injection; beside ConfigMap creates in the same run (no webhook), the API
// server's own floor.
//
//	go run ./test/bench/admission [-policies 1000 -pods 5000 -samples 300]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/operator"
	"github.com/meshtls/meshtls-operator/internal/testenv"
	"github.com/meshtls/meshtls-operator/test/bench/benchutil"
)

func main() {
	policies := flag.Int("policies", 1000, "workload policies already in the namespace")
	pods := flag.Int("pods", 5000, "meshed pods already in the namespace")
	samples := flag.Int("samples", 300, "timed creates of each kind")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the timed creates (API server calls, webhooks and the in-process manager) to this file")
	flag.Parse()
	ctrl.SetLogger(logr.Discard())
	if err := run(*policies, *pods, *samples); err != nil {
		fmt.Fprintf(os.Stderr, "admission: %v\n", err)
		os.Exit(1)
	}
}

var cpuProfile string

func run(policies, pods, samples int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "meshtls-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env, err := testenv.Start(ctx, testenv.Options{
		Dir:                   filepath.Join(dir, "env"),
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")}},
	})
	if err != nil {
		return err
	}
	defer env.Stop()
	host, port, certDir := env.WebhookServing()
	mgr, _, err := operator.New(env.Config, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", PprofAddr: os.Getenv("PPROF_ADDR"), Webhooks: true, WebhookHost: host, WebhookPort: port, WebhookCertDir: certDir,
		Inject: inject.DefaultConfig(), OperatorNamespace: "meshtls-system",
	})
	if err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync")
	}
	fast, err := benchutil.FastClient(env.Config)
	if err != nil {
		return err
	}

	if err := fast.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}); err != nil {
		return err
	}
	err = retry(func() error {
		return fast.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "probe", Name: "probe"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}, client.DryRunAll)
	})
	if err != nil {
		return fmt.Errorf("webhooks not ready: %w", err)
	}

	fmt.Printf("== admission, %d workload policies and %d meshed pods in the namespace, %d samples each\n", policies, pods, samples)
	const ns = "bench-000"
	// The pods are created through the injection webhook too.
	if _, err := benchutil.CreateMeshedPods(ctx, fast, "bench", pods, pods, policies); err != nil {
		return err
	}
	err = benchutil.Parallel(policies, 16, func(i int) error {
		return retry(func() error { return fast.Create(ctx, policy(ns, fmt.Sprintf("app-%d", i))) })
	})
	if err != nil {
		return fmt.Errorf("failed to create policies: %w", err)
	}
	// Measure at steady state: every pod has its PodProxyConfig and the controllers
	// are idle, so the figures are admission's, not the fill's.
	err = benchutil.Poll(5*time.Minute, func() (bool, error) {
		list := &v1alpha1.PodProxyConfigList{}
		if err := fast.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		strict := 0
		for _, p := range list.Items {
			if p.Spec.Inbound.Mode == v1alpha1.ModeStrict {
				strict++
			}
		}
		return strict == pods, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for steady state: %w", err)
	}
	time.Sleep(3 * time.Second)

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	// The three kinds of create are interleaved, one of each per round, so that the
	// floor is measured under the same background as the webhook paths: the
	// controllers' reaction to each new pod and policy (PodProxyConfigs, statuses,
	// certificates) loads the API server and etcd, and a floor measured once that has
	// settled would flatter the API server and blame the webhooks.
	var wmp, pod, cm []time.Duration
	timed := func(out *[]time.Duration, create func() error) error {
		start := time.Now()
		if err := create(); err != nil {
			return err
		}
		*out = append(*out, time.Since(start))
		return nil
	}
	for i := 0; i < samples; i++ {
		if err := timed(&wmp, func() error { return fast.Create(ctx, policy(ns, fmt.Sprintf("new-%d", i))) }); err != nil {
			return fmt.Errorf("WorkloadMTLSPolicy create: %w", err)
		}
		if err := timed(&pod, func() error {
			return fast.Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("timed-%d", i), Labels: map[string]string{"app": "timed"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
			})
		}); err != nil {
			return fmt.Errorf("pod create: %w", err)
		}
		if err := timed(&cm, func() error {
			return fast.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("cm-%d", i)}, Data: map[string]string{"k": "v"}})
		}); err != nil {
			return err
		}
	}
	check := &corev1.Pod{}
	if err := fast.Get(ctx, client.ObjectKey{Namespace: ns, Name: "timed-0"}, check); err != nil || !inject.Injected(check) {
		return fmt.Errorf("the timed pods were not injected (%v)", err)
	}
	report := func(name string, d []time.Duration) {
		fmt.Printf("  %-46s p50 %6.2f ms   p99 %6.2f ms\n", name,
			float64(benchutil.Percentile(d, 50).Microseconds())/1000, float64(benchutil.Percentile(d, 99).Microseconds())/1000)
	}
	report("WorkloadMTLSPolicy create (validating webhook)", wmp)
	report("Pod create (injection webhook)", pod)
	report("ConfigMap create (no webhook: the floor)", cm)
	floor := benchutil.Percentile(cm, 99)
	for _, w := range []struct {
		name string
		d    []time.Duration
	}{{"WorkloadMTLSPolicy", wmp}, {"Pod", pod}} {
		over := benchutil.Percentile(w.d, 99) - floor
		fmt.Printf("  %-18s p99 over the floor's: %6.2f ms (target: within 5 ms)\n", w.name, float64(over.Microseconds())/1000)
	}
	return nil
}

func policy(ns, app string) *v1alpha1.WorkloadMTLSPolicy {
	return &v1alpha1.WorkloadMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
		Spec: v1alpha1.WorkloadMTLSPolicySpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Mode:     v1alpha1.ModeStrict,
		},
	}
}

// retry retries a create refused while the webhook is still starting.
func retry(f func() error) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = f(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

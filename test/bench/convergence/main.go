// Command convergence measures how fast a mesh-wide mode change reaches every
// PodProxyConfig on the local control plane, beside a baseline measured in the same
// run: a plain client, with the same client settings and the same number of workers,
// updating the same objects. It also counts the manager's API writes per affected pod
// for the flip, and its writes on a full resync (a restart) when nothing changed.
//
//	go run ./test/bench/convergence [-pods 1000,5000] [-qps 500 -burst 1000 -workers 16]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/test/bench/benchutil"
)

func main() {
	pods := flag.String("pods", "1000,5000", "comma-separated pod counts")
	qps := flag.Float64("qps", 500, "client QPS of the manager and of the baseline (the manager's default)")
	burst := flag.Int("burst", 1000, "client burst of both (the manager's default)")
	workers := flag.Int("workers", 16, "reconcile workers of the manager, and goroutines of the baseline (the manager's default)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	for _, s := range strings.Split(*pods, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad -pods: %v\n", err)
			os.Exit(2)
		}
		if err := run(n, float32(*qps), *burst, *workers); err != nil {
			fmt.Fprintf(os.Stderr, "convergence %d: %v\n", n, err)
			os.Exit(1)
		}
	}
}

func run(n int, qps float32, burst, workers int) error {
	ctx := context.Background()
	b, err := benchutil.Setup(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	env, dir, bin, fast := b.Env, b.Dir, b.Manager, b.Fast
	fmt.Printf("== convergence, %d meshed pods (manager and baseline: qps %.0f, burst %d, %d workers)\n", n, qps, burst, workers)
	if _, err := benchutil.CreateMeshedPods(ctx, fast, "conv", n, 50, 5); err != nil {
		return err
	}
	mesh := &v1alpha1.MeshMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.MeshMTLSPolicySpec{Mode: v1alpha1.ModePermissive, MinimumMode: v1alpha1.ModeDisable, TrustDomain: "cluster.local",
			IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}},
	}
	if err := fast.Create(ctx, mesh); err != nil {
		return err
	}

	flags := []string{fmt.Sprintf("--kube-api-qps=%g", qps), fmt.Sprintf("--kube-api-burst=%d", burst), fmt.Sprintf("--max-concurrent-reconciles=%d", workers)}
	mgr, err := benchutil.StartManager(bin, env.KubeconfigPath, filepath.Join(dir, "manager.log"), flags...)
	if err != nil {
		return err
	}
	if err := waitAll(ctx, fast, n, v1alpha1.ModePermissive, 5*time.Minute); err != nil {
		mgr.Stop()
		return fmt.Errorf("initial PodProxyConfigs: %w", err)
	}
	settle(mgr)
	before, _ := mgr.Metric("meshtls_podproxyconfig_writes_total", "")

	// The operator: flip the mesh and time each PodProxyConfig's arrival at STRICT.
	operator, err := measure(ctx, env.Config, fast, n, v1alpha1.ModeStrict, func() error {
		m := &v1alpha1.MeshMTLSPolicy{}
		if err := fast.Get(ctx, client.ObjectKey{Name: "default"}, m); err != nil {
			return err
		}
		m.Spec.Mode = v1alpha1.ModeStrict
		return fast.Update(ctx, m)
	})
	if err != nil {
		mgr.Stop()
		return err
	}
	settle(mgr)
	after, _ := mgr.Metric("meshtls_podproxyconfig_writes_total", "")
	statusWrites, _ := mgr.Metric("meshtls_policy_status_writes_total", "")
	mgr.Stop()

	// A full resync with nothing changed: a fresh manager lists and reconciles all.
	mgr, err = benchutil.StartManager(bin, env.KubeconfigPath, filepath.Join(dir, "manager-resync.log"), flags...)
	if err != nil {
		return err
	}
	if err := benchutil.Poll(5*time.Minute, func() (bool, error) {
		done, err := mgr.Metric("controller_runtime_reconcile_total", `controller="podproxyconfig"`)
		return err == nil && done >= float64(n), nil
	}); err != nil {
		mgr.Stop()
		return fmt.Errorf("resync: %w", err)
	}
	settle(mgr)
	resyncWrites, _ := mgr.Metric("meshtls_podproxyconfig_writes_total", "")
	mgr.Stop()

	// The baseline: a plain client with the same settings updates the same objects.
	baseline, err := measure(ctx, env.Config, fast, n, v1alpha1.ModeDisable, func() error {
		return plainUpdate(ctx, env.Config, qps, burst, workers, n)
	})
	if err != nil {
		return err
	}

	report := func(name string, d []time.Duration) {
		fmt.Printf("  %-9s p50 %8.3fs   p99 %8.3fs   all %8.3fs\n", name,
			benchutil.Percentile(d, 50).Seconds(), benchutil.Percentile(d, 99).Seconds(), benchutil.Percentile(d, 100).Seconds())
	}
	report("operator", operator)
	report("baseline", baseline)
	target := 2.0
	if n > 1000 {
		target = 5.0
	}
	fmt.Printf("  p99 ratio operator/baseline %.2fx (target <= 1.3x); p99 target < %.0fs\n",
		benchutil.Percentile(operator, 99).Seconds()/benchutil.Percentile(baseline, 99).Seconds(), target)
	fmt.Printf("  PodProxyConfig writes per affected pod for the flip: %.3f (target <= 1.05); policy status writes: %.0f\n",
		(after-before)/float64(n), statusWrites)
	fmt.Printf("  PodProxyConfig writes on a full resync with nothing changed: %.0f (target 0)\n", resyncWrites)
	return nil
}

// settle waits until the manager has written nothing for two seconds.
func settle(m *benchutil.Manager) {
	last, _ := m.Metric("meshtls_podproxyconfig_writes_total", "")
	for quiet := 0; quiet < 4; {
		time.Sleep(500 * time.Millisecond)
		now, _ := m.Metric("meshtls_podproxyconfig_writes_total", "")
		if now == last {
			quiet++
		} else {
			quiet, last = 0, now
		}
	}
}

func waitAll(ctx context.Context, c client.Client, n int, mode v1alpha1.Mode, timeout time.Duration) error {
	return benchutil.Poll(timeout, func() (bool, error) {
		list := &v1alpha1.PodProxyConfigList{}
		if err := c.List(ctx, list); err != nil {
			return false, err
		}
		count := 0
		for _, p := range list.Items {
			if p.Spec.Inbound.Mode == mode {
				count++
			}
		}
		return count == n, nil
	})
}

// measure starts a watch, runs change, and returns for each PodProxyConfig how long
// after the start of change the watch saw it reach mode.
func measure(ctx context.Context, cfg *rest.Config, c client.WithWatch, n int, mode v1alpha1.Mode, change func() error) ([]time.Duration, error) {
	list := &v1alpha1.PodProxyConfigList{}
	if err := c.List(ctx, list); err != nil {
		return nil, err
	}
	w, err := c.Watch(ctx, &v1alpha1.PodProxyConfigList{}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	seen := map[string]time.Duration{}
	start := time.Now()
	errCh := make(chan error, 1)
	go func() { errCh <- change() }()
	timeout := time.After(10 * time.Minute)
	for len(seen) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, fmt.Errorf("watch closed after %d of %d", len(seen), n)
			}
			if ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			p := ev.Object.(*v1alpha1.PodProxyConfig)
			key := p.Namespace + "/" + p.Name
			if _, done := seen[key]; !done && p.Spec.Inbound.Mode == mode {
				seen[key] = time.Since(start)
			}
		case err := <-errCh:
			if err != nil {
				return nil, err
			}
		case <-timeout:
			return nil, fmt.Errorf("only %d of %d PodProxyConfigs reached %s", len(seen), n, mode)
		}
	}
	out := make([]time.Duration, 0, n)
	for _, d := range seen {
		out = append(out, d)
	}
	return out, nil
}

// plainUpdate is the baseline: list, then update every PodProxyConfig's mode with a
// client of the manager's settings from `workers` goroutines.
func plainUpdate(ctx context.Context, cfg *rest.Config, qps float32, burst, workers, n int) error {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = qps, burst
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return err
	}
	list := &v1alpha1.PodProxyConfigList{}
	if err := c.List(ctx, list); err != nil {
		return err
	}
	var mu sync.Mutex
	return benchutil.Parallel(len(list.Items), workers, func(i int) error {
		mu.Lock()
		p := list.Items[i].DeepCopy()
		mu.Unlock()
		p.Spec.Inbound.Mode = v1alpha1.ModeDisable
		p.Spec.ConfigHash = policy.ConfigHash(p.Spec)
		return c.Update(ctx, p)
	})
}

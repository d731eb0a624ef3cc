// Command coldstart measures the manager's start on a large cluster: 10,000 meshed
// pods and 1,000 workload policies already present. It times manager start to steady
// state (every PodProxyConfig right, the mesh status counting every pod, the work queue
// empty) twice: a first start that creates every PodProxyConfig, and a restart that
// finds them all in place; and it reads the manager's RSS at steady state.
//
//	go run ./test/bench/coldstart [-pods 10000 -policies 1000]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/test/bench/benchutil"
)

const perNamespace = 50

// steadyAfter is how long after convergence the steady-state RSS is read.
const steadyAfter = 15 * time.Second

// extraFlags passes $MANAGER_FLAGS (space-separated) to the manager, e.g.
// MANAGER_FLAGS=--pprof-bind-address=127.0.0.1:6060 to profile it.
func extraFlags() []string { return strings.Fields(os.Getenv("MANAGER_FLAGS")) }

func main() {
	pods := flag.Int("pods", 10000, "meshed pods")
	policies := flag.Int("policies", 1000, "workload policies, spread over the namespaces")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	if err := run(*pods, *policies); err != nil {
		fmt.Fprintf(os.Stderr, "coldstart: %v\n", err)
		os.Exit(1)
	}
}

func run(n, policies int) error {
	ctx := context.Background()
	b, err := benchutil.Setup(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	env, dir, bin, fast := b.Env, b.Dir, b.Manager, b.Fast

	namespaces := (n + perNamespace - 1) / perNamespace
	perNS := (policies + namespaces - 1) / namespaces
	fmt.Printf("== cold start, %d meshed pods in %d namespaces, %d workload policies\n", n, namespaces, policies)
	fillStart := time.Now()
	nsNames, err := benchutil.CreateMeshedPods(ctx, fast, "cold", n, perNamespace, perNS)
	if err != nil {
		return err
	}
	err = benchutil.Parallel(policies, 32, func(i int) error {
		ns := nsNames[i/perNS]
		return fast.Create(ctx, &v1alpha1.WorkloadMTLSPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("app-%d", i%perNS)},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{
				Selector:      &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%perNS)}},
				Mode:          v1alpha1.ModeStrict,
				PortLevelMTLS: []v1alpha1.PortMTLS{{Port: 9090, Mode: v1alpha1.ModePermissive}},
			},
		})
	})
	if err != nil {
		return fmt.Errorf("failed to create policies: %w", err)
	}
	err = fast.Create(ctx, &v1alpha1.MeshMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.MeshMTLSPolicySpec{Mode: v1alpha1.ModePermissive, MinimumMode: v1alpha1.ModeDisable, TrustDomain: "cluster.local",
			IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}},
	})
	if err != nil {
		return err
	}
	fmt.Printf("  filled the cluster in %.1fs\n", time.Since(fillStart).Seconds())

	for _, phase := range []string{"first start (creates every PodProxyConfig)", "restart (every PodProxyConfig in place)"} {
		pprofAddr, err := freeAddr()
		if err != nil {
			return err
		}
		flags := append([]string{"--pprof-bind-address=" + pprofAddr}, extraFlags()...)
		mgr, err := benchutil.StartManager(bin, env.KubeconfigPath, filepath.Join(dir, "manager.log"), flags...)
		if err != nil {
			return err
		}
		steady, err := waitSteady(ctx, fast, mgr, n)
		if hold := os.Getenv("HOLD"); hold != "" {
			fmt.Println("  holding the manager for profiling:", hold)
			d, _ := time.ParseDuration(hold)
			time.Sleep(d)
		}
		if err != nil {
			mgr.Stop()
			return fmt.Errorf("%s: %w", phase, err)
		}
		atConvergence, _ := mgr.RSS()
		// Steady state: the same cluster, nothing changing, a little later (the
		// manager hands a burst's garbage back once its queue has been idle).
		time.Sleep(steadyAfter)
		rss, _ := mgr.RSS()
		heapInuse, _ := mgr.Metric("go_memstats_heap_inuse_bytes", "")
		heapAlloc, _ := mgr.Metric("go_memstats_heap_alloc_bytes", "")
		heapReleased, _ := mgr.Metric("go_memstats_heap_released_bytes", "")
		writes, _ := mgr.Metric("meshtls_podproxyconfig_writes_total", "")
		top := heapTop(pprofAddr, 8)
		mgr.Stop()
		target := 64*1024*1024 + 4*1024*n
		fmt.Printf("  %s: converged after %.1fs (target < 30s), %0.f PodProxyConfig writes\n", phase, steady.Seconds(), writes)
		fmt.Printf("    RSS at steady state (%s after converging) %.1f MiB (target < %.1f MiB = 64 MiB + 4 KiB/pod); at the moment of convergence %.1f MiB\n",
			steadyAfter, float64(rss)/(1<<20), float64(target)/(1<<20), float64(atConvergence)/(1<<20))
		fmt.Printf("    Go heap: in use %.1f MiB, allocated %.1f MiB, released to the OS %.1f MiB\n", heapInuse/(1<<20), heapAlloc/(1<<20), heapReleased/(1<<20))
		fmt.Print(top)
	}
	return nil
}

// waitSteady waits until the mesh status counts every pod, every PodProxyConfig exists
// and the PodProxyConfig work queue is empty, and returns the time since start.
func waitSteady(ctx context.Context, c client.Client, mgr *benchutil.Manager, n int) (time.Duration, error) {
	err := benchutil.Poll(10*time.Minute, func() (bool, error) {
		mesh := &v1alpha1.MeshMTLSPolicy{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		if mesh.Status.MeshedPods != int32(n) || mesh.Status.PodsByMode == nil || mesh.Status.PodsByMode.Strict != int32(n) {
			return false, nil
		}
		depth, err := mgr.Metric("workqueue_depth", `name="podproxyconfig"`)
		if err != nil || depth != 0 {
			return false, nil
		}
		reconciled, _ := mgr.Metric("controller_runtime_reconcile_total", `controller="podproxyconfig"`)
		if reconciled < float64(n) {
			return false, nil
		}
		list := &v1alpha1.PodProxyConfigList{}
		if err := c.List(ctx, list, client.Limit(1)); err != nil {
			return false, err
		}
		remaining := int64(0)
		if list.RemainingItemCount != nil {
			remaining = *list.RemainingItemCount
		}
		return int64(len(list.Items))+remaining == int64(n), nil
	})
	return time.Since(mgr.Started), err
}

// freeAddr is a free loopback address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// heapTop summarizes the manager's live heap by where it was allocated: the largest n
// entries of its in-use heap profile (go tool pprof -top).
func heapTop(addr string, n int) string {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-sample_index=inuse_space", fmt.Sprintf("-nodecount=%d", n),
		"http://"+addr+"/debug/pprof/heap").Output()
	if err != nil {
		return fmt.Sprintf("    (no heap profile: %v)\n", err)
	}
	var b strings.Builder
	b.WriteString("    live heap by allocation site (pprof, sampled):\n")
	rows := false
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "flat%") {
			rows = true
			continue
		}
		if rows && strings.TrimSpace(line) != "" {
			b.WriteString("      " + strings.TrimSpace(line) + "\n")
		}
	}
	return b.String()
}

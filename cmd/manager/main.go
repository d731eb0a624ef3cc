// Command manager runs the meshtls-operator controllers.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/operator"
)

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	var o operator.Options
	var qps float64
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; \"0\" turns it off")
	flag.BoolVar(&o.MetricsSecure, "metrics-secure", false, "serve metrics over HTTPS, only to callers allowed to get /metrics (TokenReview and SubjectAccessReview)")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	flag.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader, so that only one of several replicas reconciles")
	flag.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader-election Lease; the manager's own namespace in a cluster, meshtls-system outside one")
	flag.Float64Var(&qps, "kube-api-qps", 500, "sustained queries per second to the API server (client-side limit)")
	flag.IntVar(&o.KubeAPIBurst, "kube-api-burst", 1000, "burst of queries to the API server (client-side limit)")
	flag.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", 16, "PodProxyConfig reconcile workers")
	o.Inject = inject.DefaultConfig()
	flag.BoolVar(&o.Webhooks, "enable-webhooks", true, "serve the admission webhooks (policy validation, sidecar injection)")
	flag.StringVar(&o.WebhookHost, "webhook-host", "", "address the webhook server binds to (all interfaces when empty)")
	flag.IntVar(&o.WebhookPort, "webhook-port", 9443, "port of the webhook server")
	flag.StringVar(&o.WebhookCertDir, "webhook-cert-dir", "", "directory holding the webhook server's tls.crt and tls.key (default: controller-runtime's)")
	flag.StringVar(&o.Inject.ProxyImage, "proxy-image", o.Inject.ProxyImage, "image of the injected meshtls-proxy sidecar and capture step")
	flag.Int64Var(&o.Inject.ProxyUID, "proxy-uid", o.Inject.ProxyUID, "user ID the proxy runs as; its own traffic is not captured")
	resources := map[string]*string{}
	for _, r := range []struct{ flag, def, help string }{
		{"proxy-cpu-request", "50m", "CPU request of the injected proxy"},
		{"proxy-memory-request", "32Mi", "memory request of the injected proxy"},
		{"proxy-cpu-limit", "", "CPU limit of the injected proxy (none when empty)"},
		{"proxy-memory-limit", "128Mi", "memory limit of the injected proxy (none when empty)"},
	} {
		resources[r.flag] = flag.String(r.flag, r.def, r.help)
	}
	flag.StringVar(&o.OperatorNamespace, "operator-namespace", envOr("POD_NAMESPACE", "meshtls-system"), "the operator's namespace, whose pods are never injected")
	flag.StringVar(&o.PprofAddr, "pprof-bind-address", "", "address of a net/http/pprof endpoint for profiling; off when empty")
	flag.BoolVar(&o.EnableHTTP2, "enable-http2", false, "serve HTTP/2 on the metrics and webhook servers (off: CVE-2023-44487, CVE-2023-39325)")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	o.KubeAPIQPS = float32(qps)
	var err error
	if o.Inject.ProxyResources, err = inject.Resources(*resources["proxy-cpu-request"], *resources["proxy-memory-request"],
		*resources["proxy-cpu-limit"], *resources["proxy-memory-limit"]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to load a kubeconfig (set KUBECONFIG, or run `make run` to start a local control plane): %v\n", err)
		os.Exit(1)
	}
	mgr, _, err := operator.New(cfg, o)
	if err != nil {
		ctrl.Log.Error(err, "setup failed")
		os.Exit(1)
	}
	ctrl.Log.WithName("setup").Info("starting manager", "leaderElection", o.LeaderElect, "metrics", o.MetricsAddr, "probes", o.ProbeAddr)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

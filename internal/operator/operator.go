// Package operator builds the meshtls-operator manager: its cache, metrics and probe
// servers, leader election, and controllers. cmd/manager parses flags into Options;
// the integration tests build the very same manager.
package operator

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/controllers"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/metricsauth"
	"github.com/meshtls/meshtls-operator/internal/policy"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/webhooks"
)

// Options are the manager's settings; cmd/manager documents each as a flag.
type Options struct {
	MetricsAddr             string
	MetricsSecure           bool
	ProbeAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string
	KubeAPIQPS              float32
	KubeAPIBurst            int
	EnableHTTP2             bool
	MaxConcurrentReconciles int
	// PprofAddr serves net/http/pprof when set.
	PprofAddr string
	// Webhooks serves the admission webhooks on WebhookHost:WebhookPort with the
	// certificate in WebhookCertDir (tls.crt, tls.key).
	Webhooks       bool
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
	// Inject configures sidecar injection.
	Inject inject.Config
	// OperatorNamespace is never injected.
	OperatorNamespace string
	// SkipNameValidation lets tests build several managers in one process.
	SkipNameValidation bool
}

// New builds the manager: the policy index and its feeder, which run on every replica
// (the webhooks answer from every replica), the leader-elected controllers, the
// webhooks, and the probes (/readyz fails until the index is filled). It returns the
// policy index.
func New(cfg *rest.Config, o Options) (ctrl.Manager, *policy.Index, error) {
	if os.Getenv("GOGC") == "" {
		// The cache is most of the heap and changes slowly: collect at 1.5x the live
		// heap rather than 2x, trading a little CPU for a smaller footprint.
		debug.SetGCPercent(50)
	}
	cfg = rest.CopyConfig(cfg)
	if o.KubeAPIQPS != 0 {
		cfg.QPS, cfg.Burst = o.KubeAPIQPS, o.KubeAPIBurst
	}

	var tlsOpts []func(*tls.Config)
	if !o.EnableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.MetricsSecure, TLSOpts: tlsOpts}
	if o.MetricsSecure {
		metricsOpts.FilterProvider = metricsauth.Provider
	}

	leaderNS := o.LeaderElectionNamespace
	if leaderNS == "" {
		if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err != nil {
			leaderNS = "meshtls-system"
		}
	}

	gracefulShutdown := 15 * time.Second
	byObject := map[client.Object]cache.ByObject{
		&corev1.Pod{}:              {Transform: controllers.TrimPod},
		&v1alpha1.PodProxyConfig{}: {Transform: controllers.TrimProxyConfig},
	}
	for obj, opts := range controllers.IdentityCacheOptions(o.OperatorNamespace) {
		byObject[obj] = opts
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme.New(),
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.ProbeAddr,
		PprofBindAddress:              o.PprofAddr,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "meshtls-operator.meshtls.io",
		LeaderElectionNamespace:       leaderNS,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &gracefulShutdown,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir, TLSOpts: tlsOpts,
		}),
		Controller: config.Controller{SkipNameValidation: &o.SkipNameValidation},
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         byObject,
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create manager: %w", err)
	}
	ix := policy.NewIndex(policy.WithOperatorNamespace(o.OperatorNamespace))
	feeder := controllers.NewFeeder(ix, mgr.GetCache(), time.Second)
	if err := mgr.Add(feeder); err != nil {
		return nil, nil, err
	}
	if err := controllers.Setup(mgr, feeder, controllers.Options{MaxConcurrentReconciles: o.MaxConcurrentReconciles, OperatorNamespace: o.OperatorNamespace}); err != nil {
		return nil, nil, err
	}
	// The guard must let the operator's own service account (meshtls-operator in
	// config/rbac and in the CSV) write PodProxyConfigs.
	operatorUser := ""
	if o.OperatorNamespace != "" {
		operatorUser = "system:serviceaccount:" + o.OperatorNamespace + ":meshtls-operator"
	}
	if err := controllers.SetupGuardCheck(mgr, operatorUser); err != nil {
		return nil, nil, err
	}
	if o.Webhooks {
		certDir := o.WebhookCertDir
		if certDir == "" {
			certDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
		}
		if _, err := os.Stat(filepath.Join(certDir, "tls.crt")); err != nil {
			return nil, nil, fmt.Errorf("the admission webhooks are on, but there is no serving certificate %s: mount one there (config/certmanager makes it; see --webhook-cert-dir) or run with --enable-webhooks=false", filepath.Join(certDir, "tls.crt"))
		}
		if err := webhooks.Setup(mgr, ix, feeder.Ready, webhooks.Options{Inject: o.Inject}); err != nil {
			return nil, nil, fmt.Errorf("failed to set up webhooks: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, nil, err
	}
	if err := mgr.AddReadyzCheck("policy-index", feeder.Checker); err != nil {
		return nil, nil, err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		// The initial lists of a large cluster decode into garbage many times the
		// size of what the cache keeps; hand it back to the OS once, instead of
		// holding it until the scavenger gets to it.
		if mgr.GetCache().WaitForCacheSync(ctx) {
			debug.FreeOSMemory()
		}
		trimAfterBursts(ctx, 5*time.Second, controllers.Reconciles, debug.FreeOSMemory)
		return nil
	})); err != nil {
		return nil, nil, err
	}
	return mgr, ix, nil
}

// burstReconciles is how many PodProxyConfig reconciles make a burst worth handing
// its garbage back to the OS for (a cold start, a mesh-wide flip).
const burstReconciles = 1000

// trimAfterBursts calls free once the PodProxyConfig controller goes idle after a
// burst: a burst leaves the heap goal at 1.5x its peak, and without allocation no GC
// runs to bring it down, so the process would keep that memory while idle. It checks
// count every interval and frees at most once per burst.
func trimAfterBursts(ctx context.Context, interval time.Duration, count func() int64, free func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last, sinceFree := count(), int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := count()
		busy := now - last
		last = now
		sinceFree += busy
		if busy == 0 && sinceFree >= burstReconciles {
			free()
			sinceFree = 0
		}
	}
}

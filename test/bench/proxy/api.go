package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/proxy"
	"github.com/meshtls/meshtls-operator/internal/proxy/kube"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// policyPropagation runs a proxy against the local control plane as a pod runs it
// (in-cluster configuration, a pod-bound token) and measures how long a
// PodProxyConfig change takes to reach new connections, with and without 1,000
// other config clients watching their own PodProxyConfigs in one process; and how
// often the proxy writes its status under steady load.
func (b *bench) policyPropagation() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := testenv.AssetsDir(); err != nil {
		return err
	}
	env, err := testenv.Start(ctx, testenv.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = -1, -1
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return err
	}
	const ns = "bench"
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"podproxyconfigs"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"podproxyconfigs/status"}, Verbs: []string{"patch"}},
		}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "meshtls-proxy"},
			Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:serviceaccounts:" + ns}}},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return err
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server-0"},
		Spec: corev1.PodSpec{ServiceAccountName: "server", AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if err := c.Create(ctx, pod); err != nil {
		return err
	}
	tr, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().ServiceAccounts(ns).CreateToken(ctx, "server", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	tokenDir := filepath.Join(b.dir, "token")
	if err := os.MkdirAll(tokenDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tokenDir, "token"), []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tokenDir, "ca.crt"), cfg.CAData, 0o600); err != nil {
		return err
	}
	ppc := &v1alpha1.PodProxyConfig{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod.Name},
		Spec: v1alpha1.PodProxyConfigSpec{PodUID: pod.UID, Identity: serverID, CertificateSecretName: "meshtls-server-tls",
			Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModePermissive}, ConfigHash: "sha256:0"}}
	if err := c.Create(ctx, ppc); err != nil {
		return err
	}

	app := freePort()
	if _, err := b.helper("echo", "ADDRS="+app); err != nil {
		return err
	}
	host, _ := url.Parse(cfg.Host)
	listen, health, metrics := freePort(), freePort(), freePort()
	cmd := execProxy(b.proxyBin, "--inbound-capture-addr=", "--outbound-capture-addr=", "--health-addr="+health, "--metrics-addr="+metrics,
		"--inbound-listen="+listen+"="+portOf(app), "--status-interval=1s", "--log-level=warn")
	cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST="+host.Hostname(), "KUBERNETES_SERVICE_PORT="+host.Port(),
		"MESHTLS_TOKEN_FILE="+filepath.Join(tokenDir, "token"), "MESHTLS_CERT_DIR="+b.pki.serverDir, "MESHTLS_TRUST_DIR="+b.pki.trustDir,
		"POD_NAME="+pod.Name, "POD_NAMESPACE="+ns, "POD_UID="+string(pod.UID))
	if _, err := b.start("api-proxy", cmd, nil); err != nil {
		return err
	}
	if err := waitHTTP("http://"+health+"/readyz", 30*time.Second); err != nil {
		return err
	}
	apiserver := apiserverPID(host.Port())
	tlsCfg := b.clientTLS()
	open, err := tlsDialer(listen, tlsCfg)()
	if err != nil {
		return err
	}
	defer open.Close()

	section(fmt.Sprintf("Policy change propagation (PodProxyConfig update -> new connections see it; %d changes, STRICT <-> PERMISSIVE; an mTLS connection stays open)", *changes))
	hash := 0
	propagate := func() ([]time.Duration, int, error) {
		var out []time.Duration
		dropped := 0
		for i := 0; i < *changes; i++ {
			hash++
			mode := v1alpha1.ModeStrict
			if hash%2 == 0 {
				mode = v1alpha1.ModePermissive
			}
			cur := &v1alpha1.PodProxyConfig{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(ppc), cur); err != nil {
				return nil, 0, err
			}
			orig := cur.DeepCopy()
			cur.Spec.Inbound.Mode, cur.Spec.ConfigHash = mode, "sha256:"+strconv.Itoa(hash)
			start := time.Now()
			// A merge patch: the proxy writes the status meanwhile, and a change must
			// not wait on resourceVersion conflicts.
			if err := c.Patch(ctx, cur, client.MergeFrom(orig)); err != nil {
				return nil, 0, err
			}
			for {
				if plaintextPasses(listen) == (mode == v1alpha1.ModePermissive) {
					break
				}
				if time.Since(start) > 30*time.Second {
					return nil, 0, fmt.Errorf("change %d to %s not seen in 30s", hash, mode)
				}
			}
			out = append(out, time.Since(start))
			if err := roundTrip(open); err != nil {
				dropped++
				if open, err = tlsDialer(listen, tlsCfg)(); err != nil {
					return nil, 0, err
				}
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out, dropped, nil
	}
	lat, dropped, err := propagate()
	if err != nil {
		return err
	}
	row("one proxy", fmt.Sprintf("p50 %s p99 %s", ms(pct(lat, .5)), ms(pct(lat, .99))),
		fmt.Sprintf("target p99 < 1s: %s; open connections dropped: %d (target 0)", verdict(pct(lat, .99) < time.Second && dropped == 0), dropped))

	// Status writes at steady load: a steady trickle of connections, no changes.
	writes := func() float64 { return scrape(metrics, "meshtls_proxy_status_writes_total") }
	time.Sleep(1500 * time.Millisecond)
	w0 := writes()
	const window = 10 * time.Second
	steady(listen, tlsCfg, window)
	perInterval := (writes() - w0) / window.Seconds()
	time.Sleep(1500 * time.Millisecond) // the last counters of the window
	w1 := writes()
	time.Sleep(5 * time.Second)
	idle := writes() - w1
	row("status writes at steady load", fmt.Sprintf("%.2f per interval", perInterval),
		fmt.Sprintf("with --status-interval=1s; at the default 1m: %.0f writes per proxy per hour; 10,000 proxies: %.0f writes/s", perInterval*60, perInterval*60*10000/3600))
	row("status writes while idle (5 intervals)", fmt.Sprintf("%.0f", idle), "target 0: "+verdict(idle == 0))

	// 1,000 config clients in this process, each watching its own PodProxyConfig.
	if *watchers > 0 {
		const wns = "watchers"
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: wns}}); err != nil {
			return err
		}
		names := make([]string, *watchers)
		var createErr atomic.Value
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := range names {
			names[i] = fmt.Sprintf("pod-%04d", i)
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				err := c.Create(ctx, &v1alpha1.PodProxyConfig{ObjectMeta: metav1.ObjectMeta{Namespace: wns, Name: names[i]},
					Spec: v1alpha1.PodProxyConfigSpec{PodUID: "uid", Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict}, ConfigHash: "sha256:0"}})
				if err != nil {
					createErr.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		if err, _ := createErr.Load().(error); err != nil {
			return err
		}
		kcfg := &kube.Config{Host: cfg.Host, CAData: cfg.CAData, CertData: cfg.CertData, KeyData: cfg.KeyData}
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		seenFirst := make([]atomic.Bool, *watchers)
		var seenCount atomic.Int64
		notify := make([]chan string, *watchers)
		for i, name := range names {
			notify[i] = make(chan string, 8)
			kc, err := kube.NewClient(kcfg, wns, name, nil)
			if err != nil {
				return err
			}
			go kc.Follow(wctx, func(o *proxy.PodProxyConfig) {
				if o == nil {
					return
				}
				if seenFirst[i].CompareAndSwap(false, true) {
					seenCount.Add(1)
				}
				select {
				case notify[i] <- o.Spec.ConfigHash:
				default:
				}
			})
		}
		start := time.Now()
		for seenCount.Load() < int64(*watchers) {
			if time.Since(start) > 2*time.Minute {
				return fmt.Errorf("only %d of %d config clients saw their PodProxyConfig in 2m", seenCount.Load(), *watchers)
			}
			time.Sleep(50 * time.Millisecond)
		}
		row(fmt.Sprintf("%d config clients: all watching", *watchers), ms(time.Since(start)), "from start to every client holding its PodProxyConfig")
		for i := range notify {
			for len(notify[i]) > 0 {
				<-notify[i]
			}
		}
		cpu0 := cpuOf(apiserver)
		time.Sleep(5 * time.Second)
		idleCPU := (cpuOf(apiserver) - cpu0).Seconds() / 5
		t0, cpu1 := time.Now(), cpuOf(apiserver)
		lat, dropped, err := propagate()
		if err != nil {
			return err
		}
		busyCPU := (cpuOf(apiserver) - cpu1).Seconds() / time.Since(t0).Seconds()
		row(fmt.Sprintf("one proxy, %d other config clients watching", *watchers), fmt.Sprintf("p50 %s p99 %s", ms(pct(lat, .5)), ms(pct(lat, .99))),
			fmt.Sprintf("target p99 < 1s: %s; dropped: %d", verdict(pct(lat, .99) < time.Second && dropped == 0), dropped))
		// The config clients themselves: a change to one's PodProxyConfig, until its
		// callback runs.
		var wlat []time.Duration
		for k := 0; k < *changes; k++ {
			i := (k * 7919) % *watchers
			cur := &v1alpha1.PodProxyConfig{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: wns, Name: names[i]}, cur); err != nil {
				return err
			}
			want := "sha256:w" + strconv.Itoa(k)
			orig := cur.DeepCopy()
			cur.Spec.ConfigHash = want
			start := time.Now()
			if err := c.Patch(ctx, cur, client.MergeFrom(orig)); err != nil {
				return err
			}
			for got := ""; got != want; {
				select {
				case got = <-notify[i]:
				case <-time.After(30 * time.Second):
					return fmt.Errorf("config client %s did not see %s", names[i], want)
				}
			}
			wlat = append(wlat, time.Since(start))
		}
		sort.Slice(wlat, func(i, j int) bool { return wlat[i] < wlat[j] })
		row(fmt.Sprintf("%d config clients: a change to one of them", *watchers), fmt.Sprintf("p50 %s p99 %s", ms(pct(wlat, .5)), ms(pct(wlat, .99))), "update -> that client's callback")
		row("kube-apiserver CPU with them watching", fmt.Sprintf("%.3f cores idle", idleCPU), fmt.Sprintf("%.3f cores while the changes ran", busyCPU))
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// plaintextPasses says whether a plaintext client gets its echo back.
func plaintextPasses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return false
	}
	_, err = readFull(c, make([]byte, 1))
	return err == nil
}

func roundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("y")); err != nil {
		return err
	}
	_, err := readFull(c, make([]byte, 1))
	return err
}

// steady opens about 20 mTLS connections a second for d.
func steady(addr string, cfg *tls.Config, d time.Duration) {
	dial := tlsDialer(addr, cfg)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if c, err := dial(); err == nil {
			_ = roundTrip(c)
			c.Close()
		}
	}
}

// apiserverPID finds the kube-apiserver serving on port.
func apiserverPID(port string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "kube-apiserver") && strings.Contains(cmd, "--secure-port="+port+" ") {
			return pid
		}
	}
	return 0
}

// scrape reads one unlabelled sample from a metrics endpoint.
func scrape(addr, name string) float64 {
	resp, err := httpGet("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(resp, "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return v
		}
	}
	return 0
}

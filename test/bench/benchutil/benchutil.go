// Package benchutil is shared by the benchmark programs under test/bench: it starts
// the local control plane, fills it with namespaces, pods and policies, runs the
// manager binary as its own process (so its memory and its API writes are its own),
// and reads the manager's metrics.
package benchutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// FastClient is a client without client-side rate limiting, for filling the cluster.
func FastClient(cfg *rest.Config) (client.WithWatch, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, -1
	return client.NewWithWatch(cfg, client.Options{Scheme: scheme.New()})
}

// Parallel runs fn for i in [0, n) on workers goroutines and returns the first error.
func Parallel(n, workers int, fn func(i int) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return firstErr
}

// CreateMeshedPods creates namespaces prefix-000.. (labelled for injection) with
// perNamespace pods each, n pods in all; pod i has label app=app-<i%apps>.
func CreateMeshedPods(ctx context.Context, c client.Client, prefix string, n, perNamespace, apps int) ([]string, error) {
	var namespaces []string
	for i := 0; i*perNamespace < n; i++ {
		namespaces = append(namespaces, fmt.Sprintf("%s-%03d", prefix, i))
	}
	err := Parallel(len(namespaces), 16, func(i int) error {
		return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: namespaces[i], Labels: map[string]string{"meshtls.io/inject": "enabled"},
		}})
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create namespaces: %w", err)
	}
	// The ServiceAccount admission plugin refuses pods whose ServiceAccount does not
	// exist, as a real cluster does.
	err = Parallel(len(namespaces)*apps, 32, func(i int) error {
		return c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Namespace: namespaces[i/apps], Name: fmt.Sprintf("app-%d", i%apps),
		}})
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create service accounts: %w", err)
	}
	err = Parallel(n, 32, func(i int) error {
		return c.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: namespaces[i/perNamespace], Name: fmt.Sprintf("pod-%05d", i),
				Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%apps), "pod-template-hash": "7d9f8c6b5"},
			},
			Spec: corev1.PodSpec{
				ServiceAccountName: fmt.Sprintf("app-%d", i%apps),
				Containers: []corev1.Container{{
					Name: "app", Image: "registry.example/app:1.0",
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 9090}},
					Env:   []corev1.EnvVar{{Name: "MODE", Value: "production"}, {Name: "LOG_LEVEL", Value: "info"}},
				}},
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create pods: %w", err)
	}
	return namespaces, nil
}

// Manager is a manager process.
type Manager struct {
	cmd         *exec.Cmd
	MetricsAddr string
	done        chan error
	Started     time.Time
}

// BuildManager builds cmd/manager into dir.
func BuildManager(dir string) (string, error) {
	bin := filepath.Join(dir, "manager")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/manager")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build the manager: %v\n%s", err, out)
	}
	return bin, nil
}

// StartManager runs the manager binary against kubeconfig with the given extra flags.
func StartManager(bin, kubeconfig, logPath string, flags ...string) (*Manager, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Webhooks need a serving certificate and an API server that calls them; the
	// benchmarks of the manager process measure its controllers.
	args := append([]string{"--metrics-bind-address=" + addr, "--health-probe-bind-address=0", "--zap-log-level=error", "--enable-webhooks=false"}, flags...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	m := &Manager{cmd: cmd, MetricsAddr: addr, done: make(chan error, 1), Started: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { m.done <- cmd.Wait(); logFile.Close() }()
	return m, nil
}

// Stop stops the manager.
func (m *Manager) Stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// RSS is the manager's resident set size in bytes.
func (m *Manager) RSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// Metric sums the samples of a metric family whose label set contains match (e.g.
// `operation="update"`); 0 when absent.
func (m *Manager) Metric(name, match string) (float64, error) {
	resp, err := http.Get("http://" + m.MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, match) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Percentile returns the p-th percentile (0-100) of durations.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// Poll calls check until it returns true, an error, or timeout.
func Poll(timeout time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Bench is a started local control plane with the manager binary built beside it.
type Bench struct {
	Dir     string
	Env     *testenv.Env
	Manager string // path of the built manager binary
	Fast    client.WithWatch
}

// Setup starts the local control plane in a temporary directory, builds the manager
// and makes a client without rate limits. Close it when done.
func Setup(ctx context.Context) (*Bench, error) {
	dir, err := os.MkdirTemp("", "meshtls-bench-")
	if err != nil {
		return nil, err
	}
	b := &Bench{Dir: dir}
	if b.Env, err = testenv.Start(ctx, testenv.Options{Dir: filepath.Join(dir, "env")}); err != nil {
		b.Close()
		return nil, err
	}
	if b.Manager, err = BuildManager(dir); err != nil {
		b.Close()
		return nil, err
	}
	if b.Fast, err = FastClient(b.Env.Config); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Close stops the control plane and removes the directory.
func (b *Bench) Close() {
	if b.Env != nil {
		_ = b.Env.Stop()
	}
	_ = os.RemoveAll(b.Dir)
}

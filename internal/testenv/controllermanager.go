package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ControllerManagerControllers are the kube-controller-manager controllers the local
// control plane runs: what a cluster does to objects on its own, short of scheduling
// and running pods. Controllers that need nodes, volumes or a cloud are left out;
// they would only add start-up time and noise.
var ControllerManagerControllers = []string{
	// Owner references: background, foreground and orphan deletion.
	"garbage-collector-controller",
	// A deleted namespace is emptied and goes away.
	"namespace-controller",
	// The default ServiceAccount in every namespace, the legacy token Secrets, and
	// kube-root-ca.crt (what projected service-account volumes mount).
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	// Workloads make pods: Deployment -> ReplicaSet -> Pod, and the others.
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"daemonset-controller",
	"job-controller",
	"cronjob-controller",
	"replicationcontroller-controller",
	"ttl-after-finished-controller",
	"disruption-controller",
	// Services get EndpointSlices (empty while pods stay Pending).
	"endpoints-controller",
	"endpointslice-controller",
	// admin/edit/view pick up the aggregate-to-* ClusterRoles operators ship.
	"clusterrole-aggregation-controller",
}

// controllerManagerUser is the identity kube-controller-manager has in a cluster; the
// API server's bootstrap RBAC binds it to the ClusterRole of the same name. Each
// controller then runs as its own ServiceAccount in kube-system
// (--use-service-account-credentials), as in a kubeadm cluster, so that RBAC and
// admission policies see system:serviceaccount:kube-system:generic-garbage-collector
// and so on.
const controllerManagerUser = "system:kube-controller-manager"

// configureForControllerManager sets the API server flags that only make sense with
// kube-controller-manager running: envtest turns the ServiceAccount admission plugin
// off, because without the ServiceAccount controller no namespace gets its default
// ServiceAccount and every pod would be refused. With it, the API server behaves as a
// cluster's does: pods name an existing ServiceAccount and get its token mounted.
func configureForControllerManager(env *envtest.Environment) {
	env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
}

// startControllerManager starts kube-controller-manager against the running API server
// and waits until it serves /healthz and the ServiceAccount controller has made the
// default ServiceAccount (and the root-CA publisher kube-root-ca.crt) in "default".
func (e *Env) startControllerManager(ctx context.Context, assets string) error {
	apiServer := e.env.ControlPlane.GetAPIServer()
	user, err := e.env.AddUser(envtest.User{Name: controllerManagerUser}, nil)
	if err != nil {
		return fmt.Errorf("failed to provision the kube-controller-manager user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(e.Dir, "kube-controller-manager.kubeconfig")
	rootCAPath := filepath.Join(e.Dir, "kube-apiserver-ca.crt")
	certDir := filepath.Join(e.Dir, "kube-controller-manager-certs")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(rootCAPath, e.Config.CAData, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfigPath,
		// /healthz is always allowed; these let it check anything else as a cluster's does.
		"--authentication-kubeconfig=" + kubeconfigPath,
		"--authorization-kubeconfig=" + kubeconfigPath,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		// The key the API server signs service-account tokens with (envtest made it),
		// so the legacy token Secrets the token controller writes are valid too.
		"--service-account-private-key-file=" + filepath.Join(apiServer.CertDir, "sa-signer.key"),
		"--root-ca-file=" + rootCAPath,
		"--controllers=" + strings.Join(ControllerManagerControllers, ","),
		// Tests create and delete in bursts; the defaults (20/30) would make the
		// garbage collector and the workload controllers lag behind them.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--v=1",
	}
	e.controllerManager, err = startProcess(filepath.Join(e.Dir, "kube-controller-manager.log"), nil,
		filepath.Join(assets, "kube-controller-manager"), args...)
	if err != nil {
		return err
	}
	e.ControllerManagerLog = e.controllerManager.log

	healthz := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	// It serves a certificate it made itself in certDir; the health check is local.
	httpClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health check of a self-signed local process
	}}
	defer httpClient.CloseIdleConnections()
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if ended, err := e.controllerManager.exited(); ended {
			return false, fmt.Errorf("kube-controller-manager exited: %v", err)
		}
		resp, err := httpClient.Get(healthz)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = "healthz: " + resp.Status
			return false, nil
		}
		sa, cm := &corev1.ServiceAccount{}, &corev1.ConfigMap{}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, sa); err != nil {
			last = "ServiceAccount default/default: " + err.Error()
			return false, nil
		}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "kube-root-ca.crt"}, cm); err != nil {
			last = "ConfigMap default/kube-root-ca.crt: " + err.Error()
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-controller-manager did not become ready (last: %s; log: %s): %w", last, e.controllerManager.log, err)
	}
	return nil
}

// freePort returns a TCP port on loopback that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

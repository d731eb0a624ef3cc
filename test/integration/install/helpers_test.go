package install

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/bundle"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// userFieldManager is the field manager of `kubectl apply --server-side`: the
// administrator's.
const userFieldManager = "kubectl"

// operatorFieldManagers are the field managers the operator writes with.
var operatorFieldManagers = []string{"meshtls-operator", "meshtls-rollout", "meshtls-guardcheck"}

func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := bundle.Kustomize(filepath.Join(testenv.RepoRoot(), dir))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func describe(o *unstructured.Unstructured) string {
	if o.GetNamespace() != "" {
		return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
	}
	return fmt.Sprintf("%s %s", o.GetKind(), o.GetName())
}

// apply applies objs with server-side apply as the administrator, in the order
// kubectl would succeed with: namespaces and CRDs first, the rest once the CRDs are
// served. A conflict with another field manager fails: nothing is forced.
func apply(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) {
	t.Helper()
	first := func(o *unstructured.Unstructured) bool {
		return o.GetKind() == "Namespace" || o.GetKind() == "CustomResourceDefinition"
	}
	for _, pass := range []bool{true, false} {
		for _, o := range objs {
			if first(o) != pass {
				continue
			}
			obj := o.DeepCopy()
			eventually(t, time.Minute, "apply "+describe(o), func() error {
				err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(userFieldManager))
				if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
					return err // a CRD not served yet, or a namespace still being made
				}
				if err != nil {
					t.Fatalf("apply %s: %v", describe(o), err)
				}
				return nil
			})
		}
	}
}

func live(ctx context.Context, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(o.GroupVersionKind())
	err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), u)
	return u, err
}

// waitCurrent waits until kstatus computes Current for every object.
func waitCurrent(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		eventually(t, 2*time.Minute, describe(o)+" Current", func() error {
			u, err := live(ctx, o)
			if err != nil {
				return err
			}
			res, err := status.Compute(u)
			if err != nil {
				return err
			}
			if res.Status != status.CurrentStatus {
				return fmt.Errorf("kstatus %s: %s", res.Status, res.Message)
			}
			return nil
		})
	}
}

// waitCondition waits for a condition of an object to have a status.
func waitCondition(t *testing.T, ctx context.Context, o *unstructured.Unstructured, typ, want string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 2*time.Minute, fmt.Sprintf("%s %s=%s", describe(o), typ, want), func() error {
		u, err := live(ctx, o)
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m := c.(map[string]any)
			if m["type"] == typ {
				found = m
				if m["status"] == want {
					return nil
				}
				return fmt.Errorf("%s=%v: %v", typ, m["status"], m["message"])
			}
		}
		return fmt.Errorf("no %s condition in %v", typ, conds)
	})
	return found
}

// servingCert is the webhook server's certificate for 127.0.0.1, in a directory laid
// out as the manager's --webhook-cert-dir expects (tls.crt, tls.key), and its CA.
type servingCert struct {
	dir   string
	caPEM []byte
}

func newServingCert(t *testing.T) servingCert {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "install-test webhook CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tls.crt", "CERTIFICATE", leafDER)
	write("tls.key", "EC PRIVATE KEY", keyDER)
	return servingCert{dir: dir, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
}

// toLoopback points every webhook of the configurations among objs at the manager's
// webhook server on 127.0.0.1:port, keeping each webhook's path, with the test's CA
// (where a cluster routes to the Service's pods, and cert-manager's CA injector or
// OLM fills caBundle).
func toLoopback(t *testing.T, objs []*unstructured.Unstructured, port int, caPEM []byte) []*unstructured.Unstructured {
	t.Helper()
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		o = o.DeepCopy()
		if k := o.GetKind(); k == "MutatingWebhookConfiguration" || k == "ValidatingWebhookConfiguration" {
			hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
			for _, h := range hooks {
				w := h.(map[string]any)
				path, _, _ := unstructured.NestedString(w, "clientConfig", "service", "path")
				w["clientConfig"] = map[string]any{
					"url":      fmt.Sprintf("https://127.0.0.1:%d%s", port, path),
					"caBundle": caPEMBase64(caPEM),
				}
			}
			if err := unstructured.SetNestedSlice(o.Object, hooks, "webhooks"); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, o)
	}
	return out
}

// caPEMBase64 is caBundle as JSON carries it ([]byte in the typed API).
func caPEMBase64(caPEM []byte) string { return base64.StdEncoding.EncodeToString(caPEM) }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// managerProcess is cmd/manager running as the Deployment says.
type managerProcess struct {
	cmd      *exec.Cmd
	done     chan error
	log      string
	token    string
	config   *rest.Config
	probes   string
	username string
}

// podToken requests a token for a ServiceAccount bound to a pod, as the kubelet does
// for the pod's projected service-account volume.
func podToken(t *testing.T, ctx context.Context, namespace, serviceAccount string, pod *corev1.Pod) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptrTo(int64(3600)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for ServiceAccount %s/%s: %v", namespace, serviceAccount, err)
	}
	return tr.Status.Token
}

func ptrTo[T any](v T) *T { return &v }

// deploymentPod waits for kube-controller-manager to have made a pod of the
// Deployment (it stays Pending: there is no kubelet) and returns it.
func deploymentPod(t *testing.T, ctx context.Context, namespace string, selector map[string]string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 2*time.Minute, "a pod of the operator's Deployment", func() error {
		pods := &corev1.PodList{}
		if err := env.Client.List(ctx, pods, client.InNamespace(namespace), client.MatchingLabels(selector)); err != nil {
			return err
		}
		for i := range pods.Items {
			if pods.Items[i].DeletionTimestamp == nil {
				pod = &pods.Items[i]
				return nil
			}
		}
		return fmt.Errorf("kube-controller-manager made no pod yet (pods pass PodSecurity %q and the ServiceAccount admission)", "restricted")
	})
	return pod
}

// startManager runs cmd/manager with the container's arguments and environment from
// a Deployment spec (as rendered or as the CSV carries it), as ServiceAccount sa of
// namespace, authenticated with a token bound to pod. Only what a pod has privately
// is replaced: listen addresses, the webhook certificate directory.
func startManager(t *testing.T, ctx context.Context, depSpec map[string]any, namespace, sa string, pod *corev1.Pod, cert servingCert, webhookPort int) *managerProcess {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(depSpec, "template", "spec", "containers")
	var container map[string]any
	for _, c := range containers {
		if c.(map[string]any)["name"] == "manager" {
			container = c.(map[string]any)
		}
	}
	if container == nil {
		t.Fatalf("the Deployment has no manager container")
	}
	if got, _, _ := unstructured.NestedString(depSpec, "template", "spec", "serviceAccountName"); got != sa {
		t.Fatalf("the Deployment runs as ServiceAccount %q, want %q", got, sa)
	}
	p := &managerProcess{token: podToken(t, ctx, namespace, sa, pod), done: make(chan error, 1)}
	p.username = "system:serviceaccount:" + namespace + ":" + sa
	p.config = rest.AnonymousClientConfig(env.Config)
	p.config.BearerToken = p.token

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos["manager"] = &clientcmdapi.AuthInfo{Token: p.token}
	kc.Contexts["manager"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "manager"}
	kc.CurrentContext = "manager"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	p.probes = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	private := map[string]string{
		"--metrics-bind-address":      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--health-probe-bind-address": p.probes,
		"--webhook-cert-dir":          cert.dir,
		"--webhook-port":              fmt.Sprint(webhookPort),
		"--kubeconfig":                kubeconfig,
	}
	var args []string
	rawArgs, _ := container["args"].([]any)
	for _, a := range rawArgs {
		arg := a.(string)
		name := strings.SplitN(arg, "=", 2)[0]
		if _, ok := private[name]; ok {
			continue
		}
		args = append(args, arg)
	}
	for name, value := range private {
		args = append(args, name+"="+value)
	}
	cmd, _ := container["command"].([]any)
	if len(cmd) != 1 || cmd[0] != "/manager" {
		t.Fatalf("the manager container's command is %v, want [/manager] (the image's cmd/manager)", cmd)
	}
	environment := []string{}
	envs, _ := container["env"].([]any)
	for _, e := range envs {
		m := e.(map[string]any)
		value, _ := m["value"].(string)
		if path, ok, _ := unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath"); ok {
			switch path {
			case "metadata.namespace":
				value = namespace
			case "metadata.name":
				value = pod.Name
			default:
				t.Fatalf("env %v: field %s is not resolved by this test", m["name"], path)
			}
		}
		environment = append(environment, fmt.Sprintf("%s=%s", m["name"], value))
	}

	p.log = filepath.Join(t.TempDir(), "manager.log")
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(managerBinary, args...)
	// Only what the container gets: no KUBECONFIG or cluster credentials of the test.
	p.cmd.Env = append([]string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, environment...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("manager log (args %v):\n%s", args, tail(b, 60))
		}
	})
	eventually(t, time.Minute, "manager ready", func() error {
		select {
		case err := <-p.done:
			p.done <- err
			b, _ := os.ReadFile(p.log)
			t.Fatalf("the manager exited: %v\n%s", err, tail(b, 40))
		default:
		}
		resp, err := http.Get("http://" + p.probes + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	return p
}

func (p *managerProcess) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.done <- nil
}

func tail(b []byte, lines int) string {
	all := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return string(bytes.Join(all, []byte("\n")))
}

func gvk(apiVersion, kind string) schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(apiVersion, kind)
}

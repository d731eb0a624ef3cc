// Package identity tests workload identity end to end against a real kube-apiserver
// and etcd with cert-manager's real controllers and the CA ClusterIssuer mesh-ca: the
// manager runs in-process, as cmd/manager builds it, but authenticated with a token of
// its own ServiceAccount meshtls-system/meshtls-operator bound to the generated
// config/rbac role, so every test here also proves that the RBAC is enough. The tests
// read what a pod would (the issued Secret, the trust-bundle ConfigMap) as the admin.
package identity

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"go.uber.org/zap/zapcore"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
	"github.com/meshtls/meshtls-operator/internal/operator"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const (
	operatorNamespace = "meshtls-system"
	wait              = 60 * time.Second
)

var (
	env *testenv.Env
	k8s client.Client
	// managerSynced is set once the manager, running on its own RBAC, has listed
	// and watched every kind it reads.
	managerSynced bool
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var err error
	env, err = testenv.Start(ctx, testenv.Options{CertManager: true, Progress: os.Stderr, Dir: os.Getenv("MESHTLS_TESTENV_DIR")})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client

	cfg, err := operatorConfig(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to install the operator's RBAC: %v\n", err)
		return 1
	}
	mgr, _, err := operator.New(cfg, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true, OperatorNamespace: operatorNamespace,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to build the manager: %v\n", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, 90*time.Second)
	managerSynced = mgr.GetCache().WaitForCacheSync(syncCtx)
	syncCancel()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v\n", err)
	}
	return code
}

// operatorConfig installs the ServiceAccount, the generated ClusterRole and its
// binding, and the proxies' ClusterRole from config/rbac, and returns a rest.Config
// that authenticates with a token of the operator's ServiceAccount only.
func operatorConfig(ctx context.Context) (*rest.Config, error) {
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	for _, f := range []string{"service_account.yaml", "role.yaml", "role_binding.yaml", "proxy_role.yaml"} {
		if err := env.ApplyFile(ctx, filepath.Join(testenv.RepoRoot(), "config", "rbac", f)); err != nil {
			return nil, err
		}
	}
	kube := kubernetes.NewForConfigOrDie(env.Config)
	tr, err := kube.CoreV1().ServiceAccounts(operatorNamespace).CreateToken(ctx, "meshtls-operator",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7200)}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return &rest.Config{Host: env.Config.Host, BearerToken: tr.Status.Token, QPS: 200, Burst: 400,
		TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}, nil
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
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func createNamespace(t *testing.T, name string) {
	t.Helper()
	must(t, k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, Labels: map[string]string{"meshtls.io/inject": "enabled"},
	}}))
}

func createPod(t *testing.T, ns, name, sa string) *corev1.Pod {
	t.Helper()
	err := k8s.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
	must(t, k8s.Create(context.Background(), p))
	return p
}

func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	err := k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, client.GracePeriodSeconds(0))
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// baseMesh is the mesh every test starts from: the mesh-ca ClusterIssuer, hour-long
// certificates.
func baseMesh() v1alpha1.MeshMTLSPolicySpec {
	return v1alpha1.MeshMTLSPolicySpec{
		Mode:        v1alpha1.ModePermissive,
		TrustDomain: "cluster.local",
		IssuerRef:   v1alpha1.IssuerReference{Name: testenv.MeshCAIssuer, Kind: "ClusterIssuer", Group: "cert-manager.io"},
		Certificate: v1alpha1.CertificateSettings{
			Duration:    &metav1.Duration{Duration: time.Hour},
			RenewBefore: &metav1.Duration{Duration: 20 * time.Minute},
			PrivateKey:  v1alpha1.PrivateKeySettings{Algorithm: v1alpha1.ECDSAKeyAlgorithm, Size: 256},
		},
	}
}

// setMesh makes the MeshMTLSPolicy "default" the base mesh changed by mutate.
func setMesh(t *testing.T, mutate func(*v1alpha1.MeshMTLSPolicySpec)) {
	t.Helper()
	spec := baseMesh()
	if mutate != nil {
		mutate(&spec)
	}
	ctx := context.Background()
	eventually(t, wait, func() error {
		mesh := &v1alpha1.MeshMTLSPolicy{}
		err := k8s.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, mesh)
		if apierrors.IsNotFound(err) {
			mesh = &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshMTLSPolicyName}, Spec: spec}
			return k8s.Create(ctx, mesh)
		}
		if err != nil {
			return err
		}
		mesh.Spec = spec
		return k8s.Update(ctx, mesh)
	})
}

func getCertificate(ns, name string) (*cmapi.Certificate, error) {
	c := &cmapi.Certificate{}
	return c, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, c)
}

func certificateReady(c *cmapi.Certificate) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == cmapi.CertificateConditionReady {
			return cond.Status == "True" && cond.ObservedGeneration == c.Generation
		}
	}
	return false
}

// waitReady waits until the ServiceAccount's Certificate is Ready and asks for id.
func waitReady(t *testing.T, ns, sa, id string) *cmapi.Certificate {
	t.Helper()
	var c *cmapi.Certificate
	eventually(t, wait, func() error {
		var err error
		if c, err = getCertificate(ns, identity.CertificateName(sa)); err != nil {
			return err
		}
		if len(c.Spec.URIs) != 1 || c.Spec.URIs[0] != id {
			return fmt.Errorf("Certificate %s/%s asks for %v, want %s", ns, c.Name, c.Spec.URIs, id)
		}
		if !certificateReady(c) {
			return fmt.Errorf("Certificate %s/%s is not Ready: %+v", ns, c.Name, c.Status.Conditions)
		}
		return nil
	})
	return c
}

// issued is a workload certificate as its pod mounts it.
type issued struct {
	leaf          *x509.Certificate
	intermediates *x509.CertPool
}

// readLeaf reads the leaf (and its chain) from the ServiceAccount's Secret.
func readLeaf(ns, sa string) (*issued, error) {
	s := &corev1.Secret{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: identity.CertificateSecretName(sa)}, s); err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	rest := s.Data["tls.crt"]
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("Secret %s/%s holds no certificate yet", ns, s.Name)
	}
	out := &issued{leaf: certs[0], intermediates: x509.NewCertPool()}
	for _, c := range certs[1:] {
		out.intermediates.AddCert(c)
	}
	return out, nil
}

// readBundle reads a namespace's trust bundle.
func readBundle(ns string) (*x509.CertPool, []*x509.Certificate, error) {
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: identity.TrustBundleConfigMapName}, cm); err != nil {
		return nil, nil, err
	}
	certs, err := identity.ParseCAs([]byte(cm.Data[identity.TrustBundleKey]))
	if err != nil {
		return nil, nil, fmt.Errorf("ConfigMap %s/%s: %w", ns, cm.Name, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}

// verify checks a leaf against a pool as a proxy does, for both directions.
func verify(l *issued, roots *x509.CertPool) error {
	_, err := l.leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: l.intermediates,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	return err
}

func getPPC(ns, name string) (*v1alpha1.PodProxyConfig, error) {
	p := &v1alpha1.PodProxyConfig{}
	return p, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p)
}

// waitPPCCertificate waits until a pod's PodProxyConfig says check about its
// certificate.
func waitPPCCertificate(t *testing.T, ns, pod string, check func(*v1alpha1.CertificateState) error) {
	t.Helper()
	eventually(t, wait, func() error {
		p, err := getPPC(ns, pod)
		if err != nil {
			return err
		}
		if p.Spec.Certificate == nil {
			return fmt.Errorf("PodProxyConfig %s/%s has no spec.certificate", ns, pod)
		}
		return check(p.Spec.Certificate)
	})
}

func getMesh(t *testing.T) *v1alpha1.MeshMTLSPolicy {
	t.Helper()
	m := &v1alpha1.MeshMTLSPolicy{}
	must(t, k8s.Get(context.Background(), client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, m))
	return m
}

// waitMeshCondition waits until the mesh condition typ has status and its reason
// and message contain want.
func waitMeshCondition(t *testing.T, typ string, status metav1.ConditionStatus, want ...string) {
	t.Helper()
	eventually(t, wait, func() error {
		m := getMesh(t)
		for _, c := range m.Status.Conditions {
			if c.Type != typ {
				continue
			}
			if c.Status != status {
				return fmt.Errorf("%s=%s (%s: %s), want %s", typ, c.Status, c.Reason, c.Message, status)
			}
			for _, w := range want {
				if !strings.Contains(c.Reason+": "+c.Message, w) {
					return fmt.Errorf("%s %s: %s does not say %q", typ, c.Reason, c.Message, w)
				}
			}
			return nil
		}
		return fmt.Errorf("no %s condition yet", typ)
	})
}

func absent(obj client.Object) error {
	err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%T %s/%s still exists", obj, obj.GetNamespace(), obj.GetName())
}

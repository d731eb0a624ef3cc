package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
	"github.com/meshtls/meshtls-operator/internal/scheme"
)

func TestIssuedCertificate(t *testing.T) {
	const ns, sa = "id-issue", "app"
	id := "spiffe://cluster.local/ns/" + ns + "/sa/" + sa
	setMesh(t, nil)
	createNamespace(t, ns)
	createPod(t, ns, "app-1", sa)
	createPod(t, ns, "app-2", sa)

	cert := waitReady(t, ns, sa, id)

	t.Run("the Certificate is the operator's and asks for the SPIFFE identity only", func(t *testing.T) {
		if cert.Labels["app.kubernetes.io/managed-by"] != "meshtls-operator" || cert.Annotations[identity.ServiceAccountAnnotation] != sa {
			t.Fatalf("labels %v annotations %v", cert.Labels, cert.Annotations)
		}
		s := cert.Spec
		if s.SecretName != "meshtls-app-tls" || len(s.DNSNames) > 0 || s.CommonName != "" || s.IsCA ||
			s.PrivateKey == nil || s.PrivateKey.RotationPolicy != cmapi.RotationPolicyAlways || s.IssuerRef.Name != "mesh-ca" {
			t.Fatalf("spec %+v", s)
		}
		list := &cmapi.CertificateList{}
		must(t, k8s.List(context.Background(), list, client.InNamespace(ns)))
		if len(list.Items) != 1 {
			t.Fatalf("two pods of one ServiceAccount must share one Certificate, got %d", len(list.Items))
		}
	})

	var leaf *issued
	t.Run("the issued leaf has one URI SAN, no DNS SAN, and only server and client auth", func(t *testing.T) {
		var err error
		eventually(t, wait, func() error { leaf, err = readLeaf(ns, sa); return err })
		l := leaf.leaf
		if len(l.URIs) != 1 || l.URIs[0].String() != id {
			t.Errorf("URI SANs %v, want exactly [%s]", l.URIs, id)
		}
		if len(l.DNSNames)+len(l.IPAddresses)+len(l.EmailAddresses) > 0 || l.Subject.CommonName != "" {
			t.Errorf("other names: DNS %v IP %v email %v CN %q", l.DNSNames, l.IPAddresses, l.EmailAddresses, l.Subject.CommonName)
		}
		if l.IsCA || l.KeyUsage&x509.KeyUsageDigitalSignature == 0 || l.KeyUsage&x509.KeyUsageCertSign != 0 {
			t.Errorf("key usage %b, CA %v", l.KeyUsage, l.IsCA)
		}
		eku := slices.Clone(l.ExtKeyUsage)
		slices.Sort(eku)
		if !slices.Equal(eku, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
			t.Errorf("extended key usages %v, want server and client auth", l.ExtKeyUsage)
		}
		if _, ok := l.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("key %T, want ECDSA", l.PublicKey)
		}
	})

	t.Run("the leaf chains to meshtls-trust-bundle in its namespace", func(t *testing.T) {
		var roots *x509.CertPool
		eventually(t, wait, func() error {
			var err error
			roots, _, err = readBundle(ns)
			return err
		})
		if err := verify(leaf, roots); err != nil {
			t.Fatalf("the leaf does not verify against the namespace's trust bundle: %v", err)
		}
	})

	t.Run("both pods' PodProxyConfigs say the certificate is issued and Ready", func(t *testing.T) {
		for _, pod := range []string{"app-1", "app-2"} {
			waitPPCCertificate(t, ns, pod, func(c *v1alpha1.CertificateState) error {
				if !c.Ready || c.Name != "meshtls-app" || c.Reason != "Ready" {
					return fmt.Errorf("spec.certificate %+v", c)
				}
				return nil
			})
		}
	})

	t.Run("the proxies' RoleBinding lets the namespace's pods read PodProxyConfigs, and only there", func(t *testing.T) {
		rb := &rbacv1.RoleBinding{}
		eventually(t, wait, func() error {
			return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "meshtls-proxy"}, rb)
		})
		if rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != "meshtls-proxy" || len(rb.Subjects) != 1 ||
			rb.Subjects[0].Kind != "Group" || rb.Subjects[0].Name != "system:serviceaccounts:"+ns {
			t.Fatalf("RoleBinding %+v %+v", rb.RoleRef, rb.Subjects)
		}
		proxy := tokenClient(t, ns, sa)
		if err := proxy.List(context.Background(), &v1alpha1.PodProxyConfigList{}, client.InNamespace(ns)); err != nil {
			t.Fatalf("a pod's ServiceAccount cannot list the PodProxyConfigs of its namespace: %v", err)
		}
		if err := proxy.List(context.Background(), &v1alpha1.PodProxyConfigList{}, client.InNamespace("default")); err == nil {
			t.Fatal("a pod's ServiceAccount can list PodProxyConfigs of another namespace")
		}
	})

	t.Run("a DNS name added by hand to the operator's Certificate is removed", func(t *testing.T) {
		c, err := getCertificate(ns, "meshtls-app")
		must(t, err)
		c.Spec.DNSNames = []string{"evil.example"}
		must(t, k8s.Update(context.Background(), c, client.FieldOwner("kubectl-edit")))
		eventually(t, wait, func() error {
			c, err := getCertificate(ns, "meshtls-app")
			if err != nil {
				return err
			}
			if len(c.Spec.DNSNames) > 0 {
				return fmt.Errorf("dnsNames %v", c.Spec.DNSNames)
			}
			return nil
		})
	})

	t.Run("the mesh status reports the issuer, the bundle and the certificate", func(t *testing.T) {
		waitMeshCondition(t, v1alpha1.ConditionIssuerReady, metav1.ConditionTrue, "ClusterIssuer mesh-ca is Ready")
		waitMeshCondition(t, v1alpha1.ConditionTrustBundleReady, metav1.ConditionTrue, "Distributed")
		eventually(t, wait, func() error {
			m := getMesh(t)
			if m.Status.Certificates == nil || m.Status.Certificates.Ready < 1 || m.Status.Certificates.Expiring != 0 {
				return fmt.Errorf("certificates %+v", m.Status.Certificates)
			}
			return nil
		})
	})
}

// tokenClient authenticates as a ServiceAccount with a token of its own.
func tokenClient(t *testing.T, ns, sa string) client.Client {
	t.Helper()
	ctx := context.Background()
	kube := kubernetes.NewForConfigOrDie(env.Config)
	if _, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{}); err != nil {
		must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
	must(t, err)
	c, err := client.New(&rest.Config{Host: env.Config.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}},
		client.Options{Scheme: scheme.New()})
	must(t, err)
	return c
}

func TestRenewalGivesANewKey(t *testing.T) {
	const ns, sa = "id-renew", "app"
	id := "spiffe://cluster.local/ns/" + ns + "/sa/" + sa
	// Renewal 10s after issuance; restored for the other tests.
	setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) {
		s.Certificate.Duration = &metav1.Duration{Duration: 40 * time.Second}
		s.Certificate.RenewBefore = &metav1.Duration{Duration: 30 * time.Second}
	})
	defer setMesh(t, nil)
	createNamespace(t, ns)
	createPod(t, ns, "app-1", sa)
	waitReady(t, ns, sa, id)
	var first *issued
	eventually(t, wait, func() error {
		var err error
		first, err = readLeaf(ns, sa)
		if err == nil && first.leaf.NotAfter.Sub(first.leaf.NotBefore) > 5*time.Minute {
			err = fmt.Errorf("the leaf is still the hour-long one of another mesh setting")
		}
		return err
	})
	var second *issued
	eventually(t, wait, func() error {
		var err error
		if second, err = readLeaf(ns, sa); err != nil {
			return err
		}
		if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 {
			return fmt.Errorf("not renewed yet (serial %s)", first.leaf.SerialNumber)
		}
		return nil
	})
	firstKey, _ := x509.MarshalPKIXPublicKey(first.leaf.PublicKey)
	secondKey, _ := x509.MarshalPKIXPublicKey(second.leaf.PublicKey)
	if string(firstKey) == string(secondKey) {
		t.Fatal("the renewed certificate kept the old key: rotationPolicy Always is not in force")
	}
	if len(second.leaf.URIs) != 1 || second.leaf.URIs[0].String() != id {
		t.Fatalf("the renewed certificate has URIs %v", second.leaf.URIs)
	}
}

func TestLastPodGoneDeletesTheCertificate(t *testing.T) {
	const ns = "id-gc"
	setMesh(t, nil)
	createNamespace(t, ns)
	createPod(t, ns, "a-1", "a")
	createPod(t, ns, "b-1", "b")
	createPod(t, ns, "b-2", "b")
	waitReady(t, ns, "a", "spiffe://cluster.local/ns/id-gc/sa/a")
	waitReady(t, ns, "b", "spiffe://cluster.local/ns/id-gc/sa/b")

	deletePod(t, ns, "b-1")
	time.Sleep(2 * time.Second)
	if _, err := getCertificate(ns, "meshtls-b"); err != nil {
		t.Fatalf("the Certificate of b went with one of its two pods: %v", err)
	}
	deletePod(t, ns, "b-2")
	eventually(t, wait, func() error {
		return absent(&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-b"}})
	})
	if _, err := getCertificate(ns, "meshtls-a"); err != nil {
		t.Fatalf("the Certificate of a went too: %v", err)
	}
}

func TestUnmeshedNamespaceLosesEverything(t *testing.T) {
	const ns = "id-unmesh"
	setMesh(t, nil)
	createNamespace(t, ns)
	createPod(t, ns, "app-1", "app")
	waitReady(t, ns, "app", "spiffe://cluster.local/ns/id-unmesh/sa/app")
	objs := []client.Object{
		&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-app"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: identity.TrustBundleConfigMapName}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: identity.ProxyRoleName}},
	}
	for _, o := range objs {
		eventually(t, wait, func() error { return k8s.Get(context.Background(), client.ObjectKeyFromObject(o), o) })
	}

	nsObj := &corev1.Namespace{}
	must(t, k8s.Get(context.Background(), client.ObjectKey{Name: ns}, nsObj))
	delete(nsObj.Labels, "meshtls.io/inject")
	must(t, k8s.Update(context.Background(), nsObj))

	for _, o := range objs {
		eventually(t, wait, func() error { return absent(o) })
	}
}

package identity

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// TestRootRotation walks a root rotation the way docs/identity.md tells users to:
// (1) trust both roots through spec.trustBundle, (2) switch the issuer to the new
// root, (3) drop the old root. At every moment of every step, the current leaf of each
// namespace verifies against the current trust bundle of every other namespace.
func TestRootRotation(t *testing.T) {
	ctx := context.Background()
	namespaces := []string{"rot-a", "rot-b", "rot-c"}
	const sa = "svc"
	setMesh(t, nil)
	defer setMesh(t, nil)
	for _, ns := range namespaces {
		createNamespace(t, ns)
		createPod(t, ns, "svc-1", sa)
		defer deleteNamespace(t, ns)
	}
	for _, ns := range namespaces {
		waitReady(t, ns, sa, "spiffe://cluster.local/ns/"+ns+"/sa/"+sa)
	}

	oldRoot := secretPEM(t, "cert-manager", "meshtls-root-ca", "tls.crt")
	newRoot := newRootIssuer(t, "mesh-ca-next")
	oldPool, newPool := poolOf(t, oldRoot), poolOf(t, newRoot)

	// pairs checks every leaf against every bundle, as they are right now.
	pairs := func(step string) {
		t.Helper()
		leaves := map[string]*issued{}
		bundles := map[string]*x509.CertPool{}
		for _, ns := range namespaces {
			l, err := readLeaf(ns, sa)
			if err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			b, _, err := readBundle(ns)
			if err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			leaves[ns], bundles[ns] = l, b
		}
		for _, from := range namespaces {
			for _, to := range namespaces {
				if err := verify(leaves[from], bundles[to]); err != nil {
					t.Errorf("%s: the leaf of %s does not verify against the bundle of %s: %v", step, from, to, err)
				}
			}
		}
	}
	// until checks pairs continuously until done says the step is complete.
	until := func(step string, done func() error) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			pairs(step)
			err := done()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not complete within %s: %v", step, wait, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	bundlesAre := func(want ...*x509.CertPool) func() error {
		return func() error {
			for _, ns := range namespaces {
				_, certs, err := readBundle(ns)
				if err != nil {
					return err
				}
				if len(certs) != len(want) {
					return fmt.Errorf("the bundle of %s holds %d CAs, want %d", ns, len(certs), len(want))
				}
				for _, p := range want {
					found := false
					for _, c := range certs {
						if _, err := c.Verify(x509.VerifyOptions{Roots: p}); err == nil {
							found = true
						}
					}
					if !found {
						return fmt.Errorf("the bundle of %s lacks a root", ns)
					}
				}
			}
			return nil
		}
	}
	leavesFrom := func(p *x509.CertPool) func() error {
		return func() error {
			for _, ns := range namespaces {
				l, err := readLeaf(ns, sa)
				if err != nil {
					return err
				}
				if err := verify(l, p); err != nil {
					return fmt.Errorf("the leaf of %s is not from the new root yet", ns)
				}
			}
			return nil
		}
	}

	until("step 0 (one root)", bundlesAre(oldPool))

	roots := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "mesh-roots"},
		Data: map[string]string{"ca.crt": "# old root\n" + oldRoot + "# new root\n" + newRoot}}
	must(t, k8s.Create(ctx, roots))
	defer func() { _ = k8s.Delete(ctx, roots) }()
	withRoots := func(s *v1alpha1.MeshMTLSPolicySpec) {
		s.TrustBundle = &v1alpha1.TrustBundleSource{ConfigMapRef: v1alpha1.LocalObjectKeyReference{Name: "mesh-roots", Key: "ca.crt"}}
	}
	setMesh(t, withRoots)
	until("step 1 (trust both roots)", bundlesAre(oldPool, newPool))
	waitMeshCondition(t, v1alpha1.ConditionTrustBundleReady, metav1.ConditionTrue, "2 CA certificates", "in all")

	setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) { withRoots(s); s.IssuerRef.Name = "mesh-ca-next" })
	until("step 2 (issue from the new root)", leavesFrom(newPool))

	roots.Data = map[string]string{"ca.crt": newRoot}
	must(t, k8s.Update(ctx, roots))
	until("step 3 (drop the old root)", bundlesAre(newPool))
	pairs("after the rotation")
}

// newRootIssuer makes a self-signed root CA (cert-manager issues it) and a CA
// ClusterIssuer of that name on it; it returns the root's PEM.
func newRootIssuer(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	root := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cert-manager", Name: name},
		Spec: cmapi.CertificateSpec{
			IsCA: true, CommonName: name + " root", SecretName: name, Duration: &metav1.Duration{Duration: 24 * time.Hour},
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "ClusterIssuer", Name: "meshtls-selfsigned-root"},
		},
	}
	if err := k8s.Create(ctx, root); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	issuer := &cmapi.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: name}}}}
	if err := k8s.Create(ctx, issuer); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	must(t, env.WaitReady(ctx, "ClusterIssuer", "", name, wait))
	return secretPEM(t, "cert-manager", name, "tls.crt")
}

func secretPEM(t *testing.T, ns, name, key string) string {
	t.Helper()
	s := &corev1.Secret{}
	eventually(t, wait, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			return err
		}
		if len(s.Data[key]) == 0 {
			return fmt.Errorf("Secret %s/%s has no %s yet", ns, name, key)
		}
		return nil
	})
	return string(s.Data[key])
}

func poolOf(t *testing.T, pemData string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(pemData)) {
		t.Fatalf("no certificate in %q", strings.SplitN(pemData, "\n", 2)[0])
	}
	return p
}

func deleteNamespace(t *testing.T, name string) {
	t.Helper()
	err := k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}

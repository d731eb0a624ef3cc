package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/identity"
)

// TestForeignRootsAreNotTrusted plays the two attacks of someone with cert-manager
// rights in one namespace on the mesh trust bundle:
//
//  1. in a namespace that is not meshed, a SelfSigned Issuer and a CA Certificate
//     carrying the operator's managed-by label (cert-manager copies it onto the
//     request, whose status.ca is then the attacker's root);
//  2. in a meshed namespace, the operator's own Certificate edited to ask a
//     namespace-local CA Issuer (on a SelfSigned root) instead of the mesh issuer,
//     and, since the operator usually puts the Certificate back before cert-manager
//     issues from it, the request such an edit makes, created by hand (owned by the
//     operator's Certificate, labelled, asking the local issuer).
//
// Neither root may ever appear in any namespace's meshtls-trust-bundle, while the mesh
// root stays.
func TestForeignRootsAreNotTrusted(t *testing.T) {
	ctx := context.Background()
	const (
		meshed   = "trust-meshed"
		attacker = "trust-attacker"
		sa       = "app"
	)
	setMesh(t, nil)
	createNamespace(t, meshed)
	defer deleteNamespace(t, meshed)
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: attacker}}))
	defer deleteNamespace(t, attacker)
	createPod(t, meshed, "app-1", sa)
	waitReady(t, meshed, sa, "spiffe://cluster.local/ns/"+meshed+"/sa/"+sa)
	meshRoot := poolOf(t, secretPEM(t, "cert-manager", "meshtls-root-ca", "tls.crt"))
	eventually(t, wait, func() error { return bundleHas(meshed, meshRoot) })

	// Every bundle is watched from now on: a root that shows up even once fails.
	var forbidden []*x509.Certificate
	check := func(t *testing.T) {
		t.Helper()
		list := &corev1.ConfigMapList{}
		must(t, k8s.List(ctx, list, client.MatchingFields{"metadata.name": identity.TrustBundleConfigMapName}))
		for _, cm := range list.Items {
			for _, root := range forbidden {
				if bytes.Contains([]byte(cm.Data[identity.TrustBundleKey]), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})) {
					t.Fatalf("the trust bundle of %s holds the attacker's root %q", cm.Namespace, root.Subject)
				}
			}
		}
	}
	watchFor := func(t *testing.T, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			check(t)
		}
	}

	t.Run("a labelled CA Certificate of a namespace that is not meshed", func(t *testing.T) {
		selfSigned(t, attacker, "attacker-selfsigned")
		evil := &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: attacker, Name: "evil-root",
				Labels: map[string]string{identity.ManagedByLabel: identity.ManagedByValue}},
			Spec: cmapi.CertificateSpec{
				IsCA: true, CommonName: "evil root (unmeshed namespace)", SecretName: "evil-root",
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "Issuer", Name: "attacker-selfsigned"},
			},
		}
		must(t, k8s.Create(ctx, evil))
		// cert-manager issues it, and its request carries the label and the root.
		forbidden = append(forbidden, caOf(t, attacker, "evil-root"))
		must(t, env.WaitReady(ctx, "Certificate", attacker, "evil-root", wait))
		eventually(t, wait, func() error {
			_, err := issuedRequest(attacker, cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "Issuer", Name: "attacker-selfsigned"})
			return err
		})
		watchFor(t, 4*time.Second)
	})

	t.Run("the operator's Certificate pointed at a namespace-local issuer", func(t *testing.T) {
		selfSigned(t, meshed, "local-selfsigned")
		root := &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: meshed, Name: "local-root"},
			Spec: cmapi.CertificateSpec{
				IsCA: true, CommonName: "evil root (meshed namespace)", SecretName: "local-root",
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "Issuer", Name: "local-selfsigned"},
			},
		}
		must(t, k8s.Create(ctx, root))
		forbidden = append(forbidden, caOf(t, meshed, "local-root"))
		must(t, k8s.Create(ctx, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: meshed, Name: "local-ca"},
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "local-root"}}}}))
		must(t, env.WaitReady(ctx, "Issuer", meshed, "local-ca", wait))

		// The operator puts its issuerRef back at once, usually before cert-manager
		// has issued anything; the edit is made a few times all the same.
		local := cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "Issuer", Name: "local-ca"}
		for range 5 {
			must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
				c, err := getCertificate(meshed, identity.CertificateName(sa))
				if err != nil {
					return err
				}
				c.Spec.IssuerRef = local
				return k8s.Update(ctx, c)
			}))
			watchFor(t, time.Second)
		}
		// What such an edit makes when cert-manager wins the race, made for sure: a
		// request of the local issuer, labelled and owned by the operator's
		// Certificate (a namespace owner can create one by hand just as well).
		c, err := getCertificate(meshed, identity.CertificateName(sa))
		must(t, err)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		u, err := url.Parse("spiffe://cluster.local/ns/" + meshed + "/sa/" + sa)
		must(t, err)
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
		must(t, err)
		must(t, k8s.Create(ctx, &cmapi.CertificateRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: meshed, Name: "meshtls-app-local",
				Labels:          map[string]string{identity.ManagedByLabel: identity.ManagedByValue},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(c, cmapi.SchemeGroupVersion.WithKind(cmapi.CertificateKind))}},
			Spec: cmapi.CertificateRequestSpec{IssuerRef: local, Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
				Usages: identity.Usages, Duration: &metav1.Duration{Duration: time.Hour}},
		}))
		eventually(t, wait, func() error {
			check(t)
			_, err := issuedRequest(meshed, local)
			return err
		})
		watchFor(t, 4*time.Second)
		// The operator has put its Certificate back on the mesh issuer.
		eventually(t, wait, func() error {
			c, err := getCertificate(meshed, identity.CertificateName(sa))
			if err != nil {
				return err
			}
			if c.Spec.IssuerRef.Name != "mesh-ca" {
				return fmt.Errorf("Certificate %s/%s still asks %+v", meshed, c.Name, c.Spec.IssuerRef)
			}
			return nil
		})
	})

	t.Run("the mesh root is still trusted", func(t *testing.T) {
		check(t)
		eventually(t, wait, func() error { return bundleHas(meshed, meshRoot) })
		waitReady(t, meshed, sa, "spiffe://cluster.local/ns/"+meshed+"/sa/"+sa)
	})
}

// selfSigned makes a SelfSigned Issuer and waits until it is Ready.
func selfSigned(t *testing.T, ns, name string) {
	t.Helper()
	must(t, k8s.Create(context.Background(), &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}}))
	must(t, env.WaitReady(context.Background(), "Issuer", ns, name, wait))
}

// caOf is the CA certificate cert-manager issued into Secret ns/name.
func caOf(t *testing.T, ns, name string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(secretPEM(t, ns, name, "tls.crt")))
	if b == nil {
		t.Fatalf("Secret %s/%s holds no PEM certificate", ns, name)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	must(t, err)
	if !c.IsCA {
		t.Fatalf("Secret %s/%s holds no CA certificate", ns, name)
	}
	return c
}

// issuedRequest is a Ready CertificateRequest of ns to issuer that carries the
// operator's label and a status.ca: what the bundle would have trusted before.
func issuedRequest(ns string, issuer cmmeta.IssuerReference) (*cmapi.CertificateRequest, error) {
	list := &cmapi.CertificateRequestList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for i := range list.Items {
		cr := &list.Items[i]
		if cr.Spec.IssuerRef != issuer || cr.Labels[identity.ManagedByLabel] != identity.ManagedByValue || len(cr.Status.CA) == 0 {
			continue
		}
		for _, c := range cr.Status.Conditions {
			if c.Type == cmapi.CertificateRequestConditionReady && c.Status == cmmeta.ConditionTrue {
				return cr, nil
			}
		}
	}
	return nil, fmt.Errorf("no issued, labelled CertificateRequest of %s in %s", issuer.Name, ns)
}

// bundleHas checks that a namespace's bundle holds a root of pool.
func bundleHas(ns string, pool *x509.CertPool) error {
	_, certs, err := readBundle(ns)
	if err != nil {
		return err
	}
	for _, c := range certs {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
			return nil
		}
	}
	return fmt.Errorf("the bundle of %s lacks the mesh root", ns)
}

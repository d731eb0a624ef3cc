package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
	"github.com/meshtls/meshtls-operator/internal/metrics"
)

// identityObservation is what the mesh status says of identities, gathered in one
// pass over the cache (see identityStatus.observe) and written by setIdentityStatus.
type identityObservation struct {
	// issuer is the IssuerReady condition: status, reason, message.
	issuer conditionValue
	// bundle is the TrustBundleReady condition.
	bundle conditionValue
	// counts of the Certificates the meshed pods need.
	counts v1alpha1.CertificateCounts
	// notOwned names the objects under the operator's names that it did not create,
	// as "Kind namespace/name", sorted.
	notOwned []string
	// recheck is how long until a Ready certificate turns Expiring; 0 for never.
	recheck time.Duration
}

type conditionValue struct {
	status          metav1.ConditionStatus
	reason, message string
}

// identityStatus gathers the identity part of the mesh status and writes the
// certificate metrics; the mesh-status reconciler calls it, so it has one writer.
type identityStatus struct {
	reader  client.Reader
	bundles *bundleSource
	clock   clock.PassiveClock

	mu           sync.Mutex
	expiryLabels map[string]bool // namespaces with an earliest-expiry sample
}

// neededCertificate is a Certificate some meshed pod waits for.
type neededCertificate struct {
	serviceAccount, identity string
}

// observe gathers the identity status of the mesh.
func (s *identityStatus) observe(ctx context.Context, mesh *v1alpha1.MeshMTLSPolicy) (identityObservation, error) {
	var o identityObservation
	var err error
	if o.issuer, err = s.issuerCondition(ctx, mesh); err != nil {
		return o, err
	}

	ppcs := &v1alpha1.PodProxyConfigList{}
	if err := s.reader.List(ctx, ppcs, client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err != nil {
		return o, fmt.Errorf("failed to list PodProxyConfigs: %w", err)
	}
	needed := map[types.NamespacedName]neededCertificate{}
	namespaces := map[string]bool{}
	for i := range ppcs.Items {
		p := &ppcs.Items[i]
		namespaces[p.Namespace] = true
		if p.Spec.CertificateSecretName == "" {
			continue // the mesh has no issuer for it (yet)
		}
		sa := proxyConfigServiceAccount(p)
		needed[types.NamespacedName{Namespace: p.Namespace, Name: identity.CertificateName(sa)}] = neededCertificate{sa, p.Spec.Identity}
	}

	now := s.clock.Now()
	var nextRecheck time.Time
	earliest := map[string]time.Time{}
	for key, need := range needed {
		cert, err := getOptional(ctx, s.reader, key, &cmapi.Certificate{})
		if err != nil {
			return o, fmt.Errorf("failed to get Certificate %s: %w", key, err)
		}
		st := identity.State(cert, need.serviceAccount, need.identity)
		if st.Reason == identity.ReasonNotOwned {
			o.notOwned = append(o.notOwned, "Certificate "+key.String())
		}
		health, recheck := identity.HealthOf(cert, st, now)
		switch health {
		case identity.Ready:
			o.counts.Ready++
		case identity.Expiring:
			o.counts.Expiring++
		default:
			o.counts.Failing++
		}
		if !recheck.IsZero() && (nextRecheck.IsZero() || recheck.Before(nextRecheck)) {
			nextRecheck = recheck
		}
		if st.Ready && cert.Status.NotAfter != nil {
			if e, ok := earliest[key.Namespace]; !ok || cert.Status.NotAfter.Time.Before(e) {
				earliest[key.Namespace] = cert.Status.NotAfter.Time
			}
		}
	}
	if !nextRecheck.IsZero() {
		// A second late, so the count has turned when the reconcile runs.
		o.recheck = nextRecheck.Sub(now) + time.Second
	}

	meshed := make([]string, 0, len(namespaces))
	for ns := range namespaces {
		meshed = append(meshed, ns)
	}
	sort.Strings(meshed)
	if o.bundle, err = s.bundleCondition(ctx, meshed, &o.notOwned); err != nil {
		return o, err
	}
	for _, ns := range meshed {
		rb, err := getOptional(ctx, s.reader, client.ObjectKey{Namespace: ns, Name: identity.ProxyRoleName}, &rbacv1.RoleBinding{})
		if err != nil {
			return o, fmt.Errorf("failed to get RoleBinding %s/%s: %w", ns, identity.ProxyRoleName, err)
		}
		if rb != nil && rb.Labels[ManagedByLabel] != ManagedByValue {
			o.notOwned = append(o.notOwned, "RoleBinding "+ns+"/"+identity.ProxyRoleName)
		}
	}
	sort.Strings(o.notOwned)
	s.writeMetrics(o.counts, earliest)
	return o, nil
}

// bundleCondition says whether every meshed namespace holds the current bundle.
func (s *identityStatus) bundleCondition(ctx context.Context, meshed []string, notOwned *[]string) (conditionValue, error) {
	res, err := s.bundles.get(ctx)
	if err != nil {
		return conditionValue{}, err
	}
	if res.PEM == nil {
		return conditionValue{metav1.ConditionFalse, res.Reason, res.Message}, nil
	}
	var behind []string
	for _, ns := range meshed {
		cm, err := getOptional(ctx, s.reader, client.ObjectKey{Namespace: ns, Name: identity.TrustBundleConfigMapName}, &corev1.ConfigMap{})
		if err != nil {
			return conditionValue{}, fmt.Errorf("failed to get ConfigMap %s/%s: %w", ns, identity.TrustBundleConfigMapName, err)
		}
		switch {
		case cm != nil && cm.Labels[ManagedByLabel] != ManagedByValue:
			*notOwned = append(*notOwned, "ConfigMap "+ns+"/"+identity.TrustBundleConfigMapName)
			behind = append(behind, ns)
		case cm == nil || cm.Data[identity.TrustBundleKey] != string(res.PEM):
			behind = append(behind, ns)
		}
	}
	note := ""
	if res.Message != "" {
		note = "; " + res.Message
	}
	if len(behind) > 0 {
		return conditionValue{metav1.ConditionFalse, v1alpha1.ReasonTrustBundleDistributing,
			fmt.Sprintf("the trust bundle of %d CA certificates is not yet in namespaces %s%s", res.CAs, namedList(behind), note)}, nil
	}
	return conditionValue{metav1.ConditionTrue, v1alpha1.ReasonTrustBundleDistributed,
		fmt.Sprintf("the trust bundle of %d CA certificates is in all %d meshed namespaces%s", res.CAs, len(meshed), note)}, nil
}

// issuerCondition judges the mesh issuer: a cert-manager ClusterIssuer, or an Issuer of
// that name in every meshed namespace, must exist and be Ready; external issuers are
// taken as they are.
func (s *identityStatus) issuerCondition(ctx context.Context, mesh *v1alpha1.MeshMTLSPolicy) (conditionValue, error) {
	ref := identity.IssuerRef(mesh.Spec.IssuerRef)
	switch {
	case ref.Group != identity.DefaultIssuerGroup:
		return conditionValue{metav1.ConditionUnknown, v1alpha1.ReasonExternalIssuer, fmt.Sprintf(
			"%s %s of group %s is an external issuer: the operator cannot judge whether it is ready; see its own status, and the workload Certificates' conditions", ref.Kind, ref.Name, ref.Group)}, nil
	case ref.Kind == cmapi.ClusterIssuerKind:
		iss, err := getOptional(ctx, s.reader, client.ObjectKey{Name: ref.Name}, &cmapi.ClusterIssuer{})
		if err != nil {
			return conditionValue{}, fmt.Errorf("failed to get ClusterIssuer %s: %w", ref.Name, err)
		}
		if iss == nil {
			return conditionValue{metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, fmt.Sprintf(
				"ClusterIssuer %s does not exist: create it, or point spec.issuerRef at an existing issuer; no workload certificate is issued until then", ref.Name)}, nil
		}
		if ok, why := issuerReady(iss.Status.Conditions, iss.Generation); !ok {
			return conditionValue{metav1.ConditionFalse, v1alpha1.ReasonIssuerNotReady, fmt.Sprintf("ClusterIssuer %s is not Ready: %s", ref.Name, why)}, nil
		}
		return conditionValue{metav1.ConditionTrue, v1alpha1.ReasonIssuerReady, fmt.Sprintf("ClusterIssuer %s is Ready", ref.Name)}, nil
	case ref.Kind == cmapi.IssuerKind:
		namespaces := meshedNamespaces(ctx, s.reader)
		var missing, unready []string
		for _, ns := range namespaces {
			iss, err := getOptional(ctx, s.reader, client.ObjectKey{Namespace: ns, Name: ref.Name}, &cmapi.Issuer{})
			if err != nil {
				return conditionValue{}, fmt.Errorf("failed to get Issuer %s/%s: %w", ns, ref.Name, err)
			}
			if iss == nil {
				missing = append(missing, ns)
			} else if ok, _ := issuerReady(iss.Status.Conditions, iss.Generation); !ok {
				unready = append(unready, ns)
			}
		}
		switch {
		case len(missing) > 0:
			return conditionValue{metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, fmt.Sprintf(
				"spec.issuerRef names Issuer %s, which must exist in every meshed namespace; it is missing in %s", ref.Name, namedList(missing))}, nil
		case len(unready) > 0:
			return conditionValue{metav1.ConditionFalse, v1alpha1.ReasonIssuerNotReady, fmt.Sprintf(
				"Issuer %s is not Ready in namespaces %s", ref.Name, namedList(unready))}, nil
		}
		return conditionValue{metav1.ConditionTrue, v1alpha1.ReasonIssuerReady, fmt.Sprintf(
			"Issuer %s is Ready in all %d meshed namespaces", ref.Name, len(namespaces))}, nil
	}
	return conditionValue{metav1.ConditionFalse, v1alpha1.ReasonInvalidIssuerRef, fmt.Sprintf(
		"spec.issuerRef.kind %s is not a kind of cert-manager.io issuer: use ClusterIssuer or Issuer, or the group of your external issuer", ref.Kind)}, nil
}

// issuerReady reads an issuer's Ready condition.
func issuerReady(conds []cmapi.IssuerCondition, generation int64) (bool, string) {
	for _, c := range conds {
		if c.Type != cmapi.IssuerConditionReady {
			continue
		}
		if c.Status == cmmeta.ConditionTrue && (c.ObservedGeneration == 0 || c.ObservedGeneration >= generation) {
			return true, ""
		}
		return false, strings.TrimSpace(c.Reason + ": " + c.Message)
	}
	return false, "it has no Ready condition yet"
}

// writeMetrics sets the certificate gauges, and drops the namespaces that have no
// Ready certificate any more.
func (s *identityStatus) writeMetrics(counts v1alpha1.CertificateCounts, earliest map[string]time.Time) {
	metrics.Certificates.WithLabelValues("ready").Set(float64(counts.Ready))
	metrics.Certificates.WithLabelValues("failing").Set(float64(counts.Failing))
	metrics.Certificates.WithLabelValues("expiring").Set(float64(counts.Expiring))
	s.mu.Lock()
	defer s.mu.Unlock()
	for ns := range s.expiryLabels {
		if _, ok := earliest[ns]; !ok {
			metrics.CertificateEarliestExpiry.DeleteLabelValues(ns)
		}
	}
	s.expiryLabels = map[string]bool{}
	for ns, t := range earliest {
		metrics.CertificateEarliestExpiry.WithLabelValues(ns).Set(float64(t.Unix()))
		s.expiryLabels[ns] = true
	}
}

// clearMetrics drops the certificate gauges (no mesh policy: no certificates).
func (s *identityStatus) clearMetrics() { s.writeMetrics(v1alpha1.CertificateCounts{}, nil) }

// setIdentityStatus writes the identity part of the mesh status: IssuerReady,
// TrustBundleReady, the certificate counts, and Ready=False (NotOwned) when objects
// under the operator's names are someone else's, as the policies do for foreign
// PodProxyConfigs. The issuer and the bundle have conditions of their own: Ready says
// the policy is reconciled, and a mesh without a usable issuer still resolves modes.
func setIdentityStatus(st *v1alpha1.MeshMTLSPolicyStatus, generation int64, o identityObservation) {
	counts := o.counts
	st.Certificates = &counts
	set := func(typ string, c conditionValue) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: c.status, Reason: c.reason, Message: c.message, ObservedGeneration: generation})
	}
	set(v1alpha1.ConditionIssuerReady, o.issuer)
	set(v1alpha1.ConditionTrustBundleReady, o.bundle)
	if len(o.notOwned) > 0 {
		set(v1alpha1.ConditionReady, conditionValue{metav1.ConditionFalse, v1alpha1.ReasonNotOwned, fmt.Sprintf(
			"%s exist but were not created by meshtls-operator, which leaves them alone: delete them and the operator creates its own", namedList(o.notOwned))})
	}
}

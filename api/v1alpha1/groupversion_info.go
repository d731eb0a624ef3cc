// Package v1alpha1 holds the meshtls.io security API: the mesh, namespace and
// workload mTLS policies that platform teams write, the PodProxyConfig the operator
// writes for each meshed pod, and the MTLSRollout that migrates namespaces to STRICT.
//
// This package holds types, kubebuilder markers and generated deepcopy code only.
//
// +kubebuilder:object:generate=true
// +groupName=security.meshtls.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "security.meshtls.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

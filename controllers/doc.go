// Package controllers wires the operator's reconcilers into a controller-runtime
// manager. Reconcilers here stay thin: they read, call the pure packages under
// internal/ for every decision, write, and set conditions.
package controllers

// The operator's ClusterRole (config/rbac/role.yaml) is generated from these markers.
// Each line is what some reconciler needs; nothing more.
//
// +kubebuilder:rbac:groups=security.meshtls.io,resources=meshmtlspolicies;namespacemtlspolicies;workloadmtlspolicies;mtlsrollouts,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.meshtls.io,resources=meshmtlspolicies/status;namespacemtlspolicies/status;workloadmtlspolicies/status;mtlsrollouts/status,verbs=get;update
// +kubebuilder:rbac:groups=security.meshtls.io,resources=podproxyconfigs,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods;services;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

package policy

import (
	"reflect"
	"testing"
)

func TestWorkloadPolicyStatus(t *testing.T) {
	shop := meshedNS("shop")
	app := withLabels("app", "finance")
	tests := []struct {
		name   string
		world  world
		policy string
		want   WorkloadStatus
	}{
		{"should count the meshed pods a policy decides for",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"))},
				pods: []*Pod{pod("shop", "a", app), pod("shop", "b", app), pod("shop", "c"), pod("shop", "d", app, withLabels(InjectLabel, InjectDisabled))}},
			"finance", WorkloadStatus{SelectedPods: 2}},
		{"should name the pods and the winner when an older policy wins them",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{
				workload("shop", "old", 1, selecting("app", "finance")),
				workload("shop", "young", 2, selecting("tier", "web"))},
				pods: []*Pod{pod("shop", "a", app, withLabels("tier", "web")), pod("shop", "b", withLabels("tier", "web"))}},
			"young", WorkloadStatus{SelectedPods: 1, ConflictedPods: []string{"a"}, Winners: []string{"old"}}},
		{"should leave the winner unconflicted",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{
				workload("shop", "old", 1, selecting("app", "finance")),
				workload("shop", "young", 2, selecting("tier", "web"))},
				pods: []*Pod{pod("shop", "a", app, withLabels("tier", "web"))}},
			"old", WorkloadStatus{SelectedPods: 1}},
		{"should list port entries that a selected pod does not declare",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), port(8080, disable), port(9090, strict))},
				pods: []*Pod{pod("shop", "a", app, withPorts(8080)), pod("shop", "b", app, withPorts(8080, 9090))}},
			"finance", WorkloadStatus{SelectedPods: 2, UndeclaredPorts: []int32{9090}}},
		{"should name targetRefs whose Service does not exist",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "cart", "app", "cart")},
				workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("finance", "cart"))}},
			"svc", WorkloadStatus{MissingServices: []string{"finance"}}},
		{"should say when the mesh floor raises the policy's mode",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(permissive))}},
			"finance", WorkloadStatus{BelowFloor: true}},
		{"should say when the mesh floor raises a port entry",
			world{mesh: mesh(strict, permissive), namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), port(80, disable))}},
			"finance", WorkloadStatus{BelowFloor: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.world.index().WorkloadPolicyStatus("shop", tt.policy)
			if !ok {
				t.Fatal("policy not in the index")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("\n got: %+v\nwant: %+v", got, tt.want)
			}
		})
	}
}

func TestNamespaceAndMeshStatus(t *testing.T) {
	w := world{
		mesh:       mesh(permissive, permissive),
		namespaces: []Namespace{meshedNS("shop"), meshedNS("bank"), {Name: "plain"}},
		nsPolicies: []*NamespacePolicy{nsPolicy("shop", strict), nsPolicy("bank", disable), nsPolicy("plain", strict)},
		workloads:  []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(permissive))},
		pods: []*Pod{
			pod("shop", "a", withLabels("app", "finance")), pod("shop", "b"), pod("shop", "c"),
			pod("bank", "d"), pod("plain", "e"),
		},
	}
	ix := w.index()

	shop, _ := ix.NamespacePolicyStatus("shop")
	if want := (NamespaceStatus{EffectiveMode: strict, SelectedPods: 2}); !reflect.DeepEqual(shop, want) {
		t.Errorf("shop: got %+v, want %+v", shop, want)
	}
	bank, _ := ix.NamespacePolicyStatus("bank")
	if want := (NamespaceStatus{EffectiveMode: permissive, SelectedPods: 1, BelowFloor: true}); !reflect.DeepEqual(bank, want) {
		t.Errorf("bank (below the floor): got %+v, want %+v", bank, want)
	}
	if _, ok := ix.NamespacePolicyStatus("nowhere"); ok {
		t.Error("a namespace without a policy has no policy status")
	}
	got := ix.MeshStatus()
	if want := (MeshStatus{MeshedNamespaces: 2, MeshedPods: 4, Strict: 2, Permissive: 2}); got != want {
		t.Errorf("mesh: got %+v, want %+v", got, want)
	}
}

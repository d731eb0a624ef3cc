package policy

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAdmitWorkloadPolicy(t *testing.T) {
	shop := meshedNS("shop")
	finance := withLabels("app", "finance")
	existing := workload("shop", "finance", 0, selecting("app", "finance"))
	tests := []struct {
		name         string
		world        world
		candidate    *WorkloadPolicy
		wantErrors   []string // fragments, each must appear in some error
		wantWarnings []string
		old          *WorkloadPolicy // the previous version, for updates
	}{
		{"should admit a policy that selects no pod of another policy",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{pod("shop", "a", finance), pod("shop", "b", withLabels("app", "cart"))}},
			workload("shop", "cart", 1, selecting("app", "cart"), mode(strict)), nil, nil, nil},
		{"should refuse a policy that selects a meshed pod of another policy, naming it and the pod",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{pod("shop", "a", finance, withLabels("tier", "web"))}},
			workload("shop", "web", 1, selecting("tier", "web")),
			[]string{"spec.selector", `WorkloadMTLSPolicy "finance"`, "already selects: a"}, nil, nil},
		{"should name at most five pods in common",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{
				pod("shop", "p1", finance), pod("shop", "p2", finance), pod("shop", "p3", finance), pod("shop", "p4", finance),
				pod("shop", "p5", finance), pod("shop", "p6", finance), pod("shop", "p7", finance)}},
			workload("shop", "broad", 1, selectingExpr(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}})),
			[]string{"p1, p2, p3, p4, p5 (and 2 more)"}, nil, nil},
		{"should ignore pods that are not meshed",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{pod("shop", "a", finance, withLabels("tier", "web", InjectLabel, InjectDisabled))}},
			workload("shop", "web", 1, selecting("tier", "web")),
			nil, []string{"may overlap"}, nil},
		{"should refuse a selector equal to another's once matchLabels are written as In",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}},
			workload("shop", "same", 1, selectingExpr(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"finance"}}}})),
			[]string{"spec.selector", `WorkloadMTLSPolicy "finance"`, "same selector"}, nil, nil},
		{"should refuse equal targetRefs in another order",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("a", "b"))}},
			workload("shop", "svc2", 1, targeting("b", "a")),
			[]string{"spec.targetRefs", `WorkloadMTLSPolicy "svc"`, "same Services"}, nil, nil},
		{"should not compare a policy with its own old version",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{pod("shop", "a", finance)}},
			workload("shop", "finance", 0, selecting("app", "finance"), mode(strict)), nil, nil, nil},
		{"should warn when two selectors could overlap but select no pod in common yet",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}},
			workload("shop", "web", 1, selecting("tier", "web")), nil, []string{`may overlap with WorkloadMTLSPolicy "finance"`}, nil},
		{"should not warn when selectors contradict each other",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}},
			workload("shop", "cart", 1, selecting("app", "cart")), nil, nil, nil},
		{"should refuse a targetRef policy whose Service selects another policy's pod",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "finance", "app", "finance")}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{pod("shop", "a", finance)}},
			workload("shop", "svc", 1, targeting("finance")),
			[]string{"spec.targetRefs", `WorkloadMTLSPolicy "finance"`, "already selects: a"}, nil, nil},
		{"should refuse a mode below the mesh floor",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), mode(permissive)),
			[]string{"spec.mode", "weaker than the mesh minimumMode STRICT"}, nil, nil},
		{"should refuse a port mode below the mesh floor, naming its entry",
			world{mesh: mesh(strict, permissive), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), port(8080, disable)),
			[]string{"spec.portLevelMTLS[0].mode", "port 8080", "weaker than the mesh minimumMode PERMISSIVE"}, nil, nil},
		{"should name the pods in common when refusing an equal selector",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing}, pods: []*Pod{pod("shop", "a", finance)}},
			workload("shop", "same", 1, selecting("app", "finance")),
			[]string{"same selector", "pods in common: a"}, nil, nil},
		{"should take an unchanged update of a conflicted policy (a re-apply, a label edit, a finalizer removal)",
			conflictedWorld(), conflictedLoser(), nil, nil, conflictedLoser()},
		{"should take an update of a conflicted policy that shares no new pod",
			conflictedWorld(), conflictedLoser(mode(strict)), nil, nil, conflictedLoser()},
		{"should refuse an update of a conflicted policy that shares a new pod",
			conflictedWorld(), workload("shop", "loser", 1, selectingExpr(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}})),
			[]string{`WorkloadMTLSPolicy "finance"`, "already selects: a, b"}, nil, conflictedLoser()},
		{"should refuse an update that makes a selector equal to another's",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{existing, workload("shop", "web", 1, selecting("tier", "web"))}},
			workload("shop", "web", 1, selecting("app", "finance")),
			[]string{"same selector"}, nil, workload("shop", "web", 1, selecting("tier", "web"))},
		{"should take an update of a below-floor policy that keeps its mode",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), mode(disable), port(80, disable)), nil, nil,
			workload("shop", "weak", 1, selecting("app", "x"), mode(disable), port(80, disable))},
		{"should take an update of a below-floor policy that raises its mode, still below the floor",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), mode(permissive)), nil, nil,
			workload("shop", "weak", 1, selecting("app", "x"), mode(disable))},
		{"should refuse an update that lowers a mode below the floor",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), mode(disable)),
			[]string{"spec.mode", "weaker than the mesh minimumMode"}, nil,
			workload("shop", "weak", 1, selecting("app", "x"), mode(permissive))},
		{"should refuse an update that adds a port entry below the floor",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), mode(disable), port(81, disable)),
			[]string{"spec.portLevelMTLS[0].mode", "port 81"}, nil,
			workload("shop", "weak", 1, selecting("app", "x"), mode(disable))},
		{"should refuse an update from UNSET to a mode below the floor",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}},
			workload("shop", "weak", 1, selecting("app", "x"), mode(permissive)),
			[]string{"spec.mode"}, nil, workload("shop", "weak", 1, selecting("app", "x"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := map[int32]int{}
			for i, p := range tt.candidate.Ports {
				idx[p.Port] = i
			}
			w := tt.world
			if tt.old != nil {
				w.workloads = append(w.workloads, tt.old)
			}
			got := w.index().AdmitWorkloadPolicy(tt.candidate, tt.old, idx)
			errs := got.Errors.ToAggregate()
			if len(tt.wantErrors) == 0 && errs != nil {
				t.Fatalf("want admitted, got: %v", errs)
			}
			for _, want := range tt.wantErrors {
				if errs == nil || !strings.Contains(errs.Error(), want) {
					t.Errorf("want an error containing %q, got: %v", want, errs)
				}
			}
			warnings := strings.Join(got.Warnings, "\n")
			if len(tt.wantWarnings) == 0 && warnings != "" {
				t.Errorf("want no warnings, got: %s", warnings)
			}
			for _, want := range tt.wantWarnings {
				if !strings.Contains(warnings, want) {
					t.Errorf("want a warning containing %q, got: %q", want, warnings)
				}
			}
		})
	}
}

func TestSelectorKey(t *testing.T) {
	a := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x", "tier": "web"}}
	b := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web"}},
		{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"x", "x"}},
	}}
	if SelectorKey(a) != SelectorKey(b) {
		t.Errorf("semantically equal selectors differ:\n%s\n%s", SelectorKey(a), SelectorKey(b))
	}
	c := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}
	if SelectorKey(a) == SelectorKey(c) {
		t.Errorf("different selectors compare equal: %s", SelectorKey(c))
	}
}

func TestBelowFloor(t *testing.T) {
	w := world{namespaces: []Namespace{meshedNS("shop")}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", permissive)},
		workloads: []*WorkloadPolicy{workload("shop", "legacy", 0, selecting("app", "x"), mode(strict), port(80, disable)), workload("shop", "ok", 0, selecting("app", "y"), mode(strict))}}
	got := strings.Join(w.index().BelowFloor(strict), "; ")
	want := "NamespaceMTLSPolicy shop/default (PERMISSIVE); WorkloadMTLSPolicy shop/legacy (DISABLE)"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// conflictedWorld has policy "loser" (newer) sharing pod a with "finance" (older).
func conflictedWorld() world {
	finance := withLabels("app", "finance")
	return world{namespaces: []Namespace{meshedNS("shop")},
		workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"))},
		pods:      []*Pod{pod("shop", "a", finance, withLabels("tier", "web")), pod("shop", "b", finance)}}
}

func conflictedLoser(opts ...wlOpt) *WorkloadPolicy {
	return workload("shop", "loser", 1, append([]wlOpt{selecting("tier", "web")}, opts...)...)
}

func TestAdmitNamespacePolicyUpdate(t *testing.T) {
	w := world{mesh: mesh(strict, strict), namespaces: []Namespace{meshedNS("shop")}}
	ix := w.index()
	if got := ix.AdmitNamespacePolicy(nsPolicy("shop", permissive), nsPolicy("shop", disable)); len(got.Errors) > 0 {
		t.Errorf("raising a below-floor namespace mode must pass, got %v", got.Errors)
	}
	if got := ix.AdmitNamespacePolicy(nsPolicy("shop", disable), nsPolicy("shop", disable)); len(got.Errors) > 0 {
		t.Errorf("an unchanged below-floor namespace mode must pass, got %v", got.Errors)
	}
	if got := ix.AdmitNamespacePolicy(nsPolicy("shop", disable), nsPolicy("shop", permissive)); len(got.Errors) == 0 {
		t.Error("lowering a namespace mode below the floor must be refused")
	}
	if got := ix.AdmitNamespacePolicy(nsPolicy("shop", permissive), nil); len(got.Errors) == 0 {
		t.Error("creating a namespace mode below the floor must be refused")
	}
}

func TestAdmitPodExclusions(t *testing.T) {
	p := pod("shop", "a", withLabels("app", "x"))
	p.ExcludedInboundPorts = []int32{8081, 15021, 15050}
	open := world{namespaces: []Namespace{meshedNS("shop")}}
	if errs := open.index().AdmitPod(p); len(errs) > 0 {
		t.Errorf("without a floor an exclusion is allowed, got %v", errs)
	}
	floored := world{mesh: mesh(strict, permissive), namespaces: []Namespace{meshedNS("shop")}}
	errs := floored.index().AdmitPod(p).ToAggregate()
	if errs == nil || !strings.Contains(errs.Error(), "ports 8081, 15050 out of capture") || strings.Contains(errs.Error(), "15021") {
		t.Errorf("want 8081 and 15050 (an application may listen there) refused, and the proxy's port 15021 not named, got %v", errs)
	}
}

func TestOverlapWarningsAreBounded(t *testing.T) {
	w := world{namespaces: []Namespace{meshedNS("shop")}}
	for i := 0; i < 25; i++ {
		w.workloads = append(w.workloads, workload("shop", fmt.Sprintf("p%02d", i), 0, selecting("tier", fmt.Sprintf("t%d", i))))
	}
	got := w.index().AdmitWorkloadPolicy(workload("shop", "broad", 1, selecting("app", "x")), nil, nil)
	if len(got.Warnings) != maxWarned+1 || !strings.Contains(got.Warnings[maxWarned], "15 more") {
		t.Errorf("want %d warnings and a count of the rest, got %d: %v", maxWarned+1, len(got.Warnings), got.Warnings)
	}
}

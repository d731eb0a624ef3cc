package policy

import (
	"fmt"
	"strings"
	"testing"
)

// render is a one-line, readable form of a result for table comparisons.
func render(r Result, ok bool) string {
	if !ok {
		return "not meshed"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s", r.Mode)
	for _, p := range r.Ports {
		fmt.Fprintf(&b, " %d=%s", p.Port, p.Mode)
	}
	var trail []string
	for _, d := range r.Decision {
		s := string(d.Scope)
		if d.Name != "" {
			s += "/" + d.Name
		}
		s += ":" + string(d.Mode)
		if len(d.Ports) > 0 {
			s += fmt.Sprint(d.Ports)
		}
		trail = append(trail, s)
	}
	fmt.Fprintf(&b, " | %s", strings.Join(trail, " > "))
	if len(r.Losers) > 0 {
		fmt.Fprintf(&b, " | losers %s", strings.Join(r.Losers, ","))
	}
	return b.String()
}

func TestResolve(t *testing.T) {
	shop := meshedNS("shop")
	plain := Namespace{Name: "plain"}
	app := withLabels("app", "finance")

	tests := []struct {
		name  string
		world world
		pod   string // namespace/name
		want  string
	}{
		// Who is meshed.
		{"a pod in a namespace labelled for injection is meshed",
			world{namespaces: []Namespace{shop}, pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"a pod in an unlabelled namespace is not meshed",
			world{namespaces: []Namespace{plain}, pods: []*Pod{pod("plain", "a")}}, "plain/a",
			"not meshed"},
		{"a pod labelled for injection is meshed in an unlabelled namespace",
			world{namespaces: []Namespace{plain}, pods: []*Pod{pod("plain", "a", withLabels(InjectLabel, InjectEnabled))}}, "plain/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"a pod that opts out is not meshed in a labelled namespace",
			world{namespaces: []Namespace{shop}, pods: []*Pod{pod("shop", "a", withLabels(InjectLabel, InjectDisabled))}}, "shop/a",
			"not meshed"},
		{"a pod whose namespace object is not known yet is meshed only by its own label",
			world{pods: []*Pod{pod("late", "a")}}, "late/a",
			"not meshed"},
		{"an unknown pod is not meshed",
			world{namespaces: []Namespace{shop}}, "shop/ghost",
			"not meshed"},

		// The mesh layer.
		{"without a MeshMTLSPolicy the mode is PERMISSIVE",
			world{namespaces: []Namespace{shop}, pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"the mesh mode applies when nothing narrower is set",
			world{mesh: mesh(strict, disable), namespaces: []Namespace{shop}, pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"STRICT | Mesh/default:STRICT"},
		{"a mesh DISABLE applies when nothing narrower is set",
			world{mesh: mesh(disable, disable), namespaces: []Namespace{shop}, pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"DISABLE | Mesh/default:DISABLE"},

		// The namespace layer.
		{"a namespace mode overrides the mesh mode",
			world{mesh: mesh(permissive, disable), namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", strict)},
				pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"STRICT | Namespace/default:STRICT"},
		{"a namespace may be weaker than the mesh when there is no floor",
			world{mesh: mesh(strict, disable), namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", disable)},
				pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"DISABLE | Namespace/default:DISABLE"},
		{"an UNSET namespace mode inherits the mesh mode",
			world{mesh: mesh(strict, disable), namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", unset)},
				pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"STRICT | Mesh/default:STRICT"},
		{"a namespace policy of another namespace does not apply",
			world{namespaces: []Namespace{shop, meshedNS("other")}, nsPolicies: []*NamespacePolicy{nsPolicy("other", strict)},
				pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},

		// The workload layer.
		{"a workload mode overrides the namespace mode",
			world{namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", strict)},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(permissive))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Workload/finance:PERMISSIVE"},
		{"an UNSET workload mode inherits the namespace mode",
			world{namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", strict)},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT | Workload/finance:UNSET > Namespace/default:STRICT"},
		{"an UNSET workload and namespace inherit the mesh",
			world{mesh: mesh(strict, disable), namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", unset)},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT | Workload/finance:UNSET > Mesh/default:STRICT"},
		{"a workload policy that does not select the pod does not apply",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(strict))},
				pods: []*Pod{pod("shop", "a", withLabels("app", "cart"))}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"a workload policy of another namespace does not apply",
			world{namespaces: []Namespace{shop, meshedNS("bank")}, workloads: []*WorkloadPolicy{workload("bank", "finance", 0, selecting("app", "finance"), mode(strict))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"a workload policy with an invalid selector selects nothing",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{{Namespace: "shop", Name: "bad", Mode: strict, Invalid: "bad selector"}},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},

		// Port-level entries.
		{"a port entry wins over its policy's mode",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(strict), port(8080, disable))},
				pods: []*Pod{pod("shop", "a", app, withPorts(8080))}}, "shop/a",
			"STRICT 8080=DISABLE | Workload/finance:STRICT[8080]"},
		{"a port entry under an UNSET workload mode overrides the inherited mode",
			world{namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", strict)},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), port(8080, disable))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT 8080=DISABLE | Workload/finance:UNSET[8080] > Namespace/default:STRICT"},
		{"a port entry equal to the pod's mode is not listed as an exception",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(strict), port(8080, strict), port(9090, permissive))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT 9090=PERMISSIVE | Workload/finance:STRICT[8080 9090]"},
		{"exceptions are sorted by port",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(strict), port(9090, disable), port(80, permissive))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT 80=PERMISSIVE 9090=DISABLE | Workload/finance:STRICT[80 9090]"},
		{"a port entry applies whether or not the pod declares the port",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), port(7000, strict))},
				pods: []*Pod{pod("shop", "a", app, withPorts(8080))}}, "shop/a",
			"PERMISSIVE 7000=STRICT | Workload/finance:UNSET[7000] > Mesh:PERMISSIVE"},

		// targetRefs.
		{"a targetRef reaches the pods its Service selects",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "finance", "app", "finance")},
				workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("finance"), mode(strict))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT | Workload/svc:STRICT"},
		{"a targetRef to a missing Service selects nothing",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("finance"), mode(strict))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"a targetRef to a Service without a selector selects nothing",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "external")},
				workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("external"), mode(strict))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"a targetRef Service whose selector does not match the pod does not apply",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "cart", "app", "cart")},
				workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("cart"), mode(strict))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Mesh:PERMISSIVE"},
		{"any one of several targetRefs is enough",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "cart", "app", "cart"), service("shop", "finance", "app", "finance")},
				workloads: []*WorkloadPolicy{workload("shop", "svc", 0, targeting("cart", "finance"), mode(disable))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"DISABLE | Workload/svc:DISABLE"},

		// The floor.
		{"the floor raises a weaker namespace mode",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", permissive)},
				pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"STRICT | Namespace/default:PERMISSIVE > MinimumMode/default:STRICT"},
		{"the floor raises a weaker workload mode",
			world{mesh: mesh(permissive, permissive), namespaces: []Namespace{shop},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), mode(disable))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"PERMISSIVE | Workload/finance:DISABLE > MinimumMode/default:PERMISSIVE"},
		{"the floor raises a weaker port entry and the exception disappears",
			world{mesh: mesh(strict, strict), namespaces: []Namespace{shop},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), port(8080, disable))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT | Workload/finance:UNSET[8080] > Mesh/default:STRICT > MinimumMode/default:STRICT[8080]"},
		{"the floor raises a port to itself, not to the pod's stronger mode",
			world{mesh: mesh(strict, permissive), namespaces: []Namespace{shop},
				workloads: []*WorkloadPolicy{workload("shop", "finance", 0, selecting("app", "finance"), port(8080, disable))},
				pods:      []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT 8080=PERMISSIVE | Workload/finance:UNSET[8080] > Mesh/default:STRICT > MinimumMode/default:PERMISSIVE[8080]"},
		{"modes at or above the floor are left alone",
			world{mesh: mesh(strict, permissive), namespaces: []Namespace{shop}, nsPolicies: []*NamespacePolicy{nsPolicy("shop", permissive)},
				pods: []*Pod{pod("shop", "a")}}, "shop/a",
			"PERMISSIVE | Namespace/default:PERMISSIVE"},

		// Conflicts.
		{"of two policies selecting a pod the older wins",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{
				workload("shop", "young", 5, selecting("app", "finance"), mode(disable)),
				workload("shop", "old", 1, selecting("app", "finance"), mode(strict))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT | Workload/old:STRICT | losers young"},
		{"of two policies created at once the smaller name wins",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{
				workload("shop", "b", 1, selecting("app", "finance"), mode(disable)),
				workload("shop", "a", 1, selecting("app", "finance"), mode(strict))},
				pods: []*Pod{pod("shop", "p", app)}}, "shop/p",
			"STRICT | Workload/a:STRICT | losers b"},
		{"a selector policy and a targetRef policy conflict like any two",
			world{namespaces: []Namespace{shop}, services: []*Service{service("shop", "finance", "app", "finance")},
				workloads: []*WorkloadPolicy{
					workload("shop", "by-service", 1, targeting("finance"), mode(disable)),
					workload("shop", "by-label", 2, selecting("app", "finance"), mode(strict))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"DISABLE | Workload/by-service:DISABLE | losers by-label"},
		{"a losing policy's port entries do not apply",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{
				workload("shop", "old", 1, selecting("app", "finance"), mode(strict)),
				workload("shop", "young", 2, selecting("app", "finance"), port(8080, disable))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"STRICT | Workload/old:STRICT | losers young"},
		{"three policies: one winner, two sorted losers",
			world{namespaces: []Namespace{shop}, workloads: []*WorkloadPolicy{
				workload("shop", "z", 3, selecting("app", "finance")),
				workload("shop", "y", 2, selecting("app", "finance")),
				workload("shop", "x", 1, selecting("app", "finance"), mode(disable))},
				pods: []*Pod{pod("shop", "a", app)}}, "shop/a",
			"DISABLE | Workload/x:DISABLE | losers y,z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, name, _ := strings.Cut(tt.pod, "/")
			got := render(tt.world.index().Resolve(ns, name))
			if got != tt.want {
				t.Errorf("\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
	if len(tests) < 30 {
		t.Errorf("the table has %d cases; keep at least 30", len(tests))
	}
}

func TestOneRuleForMeshed(t *testing.T) {
	ix := NewIndex(WithOperatorNamespace("meshtls-system"))
	for _, ns := range []string{"shop", "meshtls-system"} {
		ix.ApplyNamespace(meshedNS(ns))
	}
	hostNet := pod("shop", "host", func(p *Pod) { p.HostNetwork = true })
	ix.ApplyPod(hostNet)
	ix.ApplyPod(pod("meshtls-system", "operator"))
	ix.ApplyPod(pod("shop", "app"))
	for _, tt := range []struct {
		name   string
		ns, at string
		want   bool
	}{
		{"a host-network pod is not meshed", "shop", "host", false},
		{"a pod in the operator namespace is not meshed, labels or not", "meshtls-system", "operator", false},
		{"an ordinary pod in a meshed namespace is meshed", "shop", "app", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := ix.Resolve(tt.ns, tt.at); ok != tt.want {
				t.Errorf("Resolve meshed=%v, want %v", ok, tt.want)
			}
			p := pod(tt.ns, tt.at)
			if tt.at == "host" {
				p.HostNetwork = true
			}
			labels, _ := ix.NamespaceLabels(tt.ns)
			if got := Meshed(p, labels, ix.OperatorNamespace()); got != tt.want {
				t.Errorf("Meshed (the injector's question) = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUncapturedPortsAndSidecar(t *testing.T) {
	w := world{namespaces: []Namespace{meshedNS("shop")},
		workloads: []*WorkloadPolicy{workload("shop", "w", 0, selecting("app", "x"), mode(strict), port(9000, disable))},
		pods:      []*Pod{pod("shop", "a", withLabels("app", "x"), excluding(8081, 9000), func(p *Pod) { p.Sidecar = false })}}
	r, ok := w.index().Resolve("shop", "a")
	if !ok {
		t.Fatal("pod not meshed")
	}
	if fmt.Sprint(r.Uncaptured) != "[8081]" {
		t.Errorf("uncaptured = %v, want [8081] (9000 is DISABLE, so excluding it bypasses nothing)", r.Uncaptured)
	}
	spec := ProxyConfigSpec(r)
	if fmt.Sprint(spec.Inbound.UncapturedPorts) != "[8081]" || spec.Sidecar != "Missing" {
		t.Errorf("spec uncaptured %v sidecar %q, want [8081] Missing", spec.Inbound.UncapturedPorts, spec.Sidecar)
	}
	with := spec
	with.Sidecar = "Injected"
	if ConfigHash(with) != spec.ConfigHash {
		t.Error("the sidecar observation must not change configHash")
	}
}

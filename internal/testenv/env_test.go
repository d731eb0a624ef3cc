package testenv_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	began := time.Now()
	var err error
	env, err = testenv.Start(context.Background(), testenv.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "local control plane (etcd, kube-apiserver, kube-controller-manager) up in %s\n", time.Since(began).Round(time.Millisecond))
	code := m.Run()
	if code != 0 {
		if b, err := os.ReadFile(env.ControllerManagerLog); err == nil {
			fmt.Fprintf(os.Stderr, "kube-controller-manager log (tail):\n%s\n", tail(string(b), 60))
		}
	}
	_ = env.Stop()
	os.Exit(code)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually polls check until it returns nil, failing the test with its last error.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func namespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	// Pods are refused until the ServiceAccount controller has made "default".
	eventually(t, 10*time.Second, "the default ServiceAccount of "+name, func() error {
		return env.Client.Get(ctx, client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
	})
}

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
}

func list[L client.ObjectList](t *testing.T, l L, ns string) L {
	t.Helper()
	if err := env.Client.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return l
}

// waitPods waits for a Deployment's pods and returns them.
func waitPods(t *testing.T, ns string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, 30*time.Second, fmt.Sprintf("%d pods in %s", want, ns), func() error {
		pods = list(t, &corev1.PodList{}, ns).Items
		if len(pods) != want {
			return fmt.Errorf("%d pods", len(pods))
		}
		return nil
	})
	return pods
}

func TestServiceAccounts(t *testing.T) {
	ctx := context.Background()
	namespace(t, "sa")
	eventually(t, 10*time.Second, "kube-root-ca.crt in a new namespace", func() error {
		return env.Client.Get(ctx, client.ObjectKey{Namespace: "sa", Name: "kube-root-ca.crt"}, &corev1.ConfigMap{})
	})

	t.Run("a pod naming a ServiceAccount that does not exist is refused", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sa", Name: "ghost"},
			Spec: corev1.PodSpec{ServiceAccountName: "ghost", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		err := env.Client.Create(ctx, pod)
		if err == nil || !strings.Contains(err.Error(), "ghost") {
			t.Fatalf("want the ServiceAccount admission plugin to refuse the pod, got %v", err)
		}
	})

	t.Run("a pod gets the default ServiceAccount and its projected token", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sa", Name: "app"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if pod.Spec.ServiceAccountName != "default" {
			t.Errorf("serviceAccountName = %q, want default", pod.Spec.ServiceAccountName)
		}
		var token bool
		for _, v := range pod.Spec.Volumes {
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					token = token || s.ServiceAccountToken != nil
				}
			}
		}
		if !token {
			t.Errorf("the pod has no projected service-account token volume: %+v", pod.Spec.Volumes)
		}
	})
}

func TestDeploymentMakesPods(t *testing.T) {
	ctx := context.Background()
	namespace(t, "workloads")
	d := deployment("workloads", "web", 3)
	if err := env.Client.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	pods := waitPods(t, "workloads", 3)
	rsList := list(t, &appsv1.ReplicaSetList{}, "workloads")
	if len(rsList.Items) != 1 {
		t.Fatalf("want one ReplicaSet, got %d", len(rsList.Items))
	}
	rs := rsList.Items[0]
	if ref := metav1.GetControllerOf(&rs); ref == nil || ref.UID != d.UID {
		t.Errorf("ReplicaSet %s is not controlled by the Deployment: %v", rs.Name, rs.OwnerReferences)
	}
	for _, p := range pods {
		if ref := metav1.GetControllerOf(&p); ref == nil || ref.UID != rs.UID {
			t.Errorf("pod %s is not controlled by the ReplicaSet: %v", p.Name, p.OwnerReferences)
		}
		if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
			t.Errorf("pod %s: node %q phase %q; with no scheduler or kubelet it stays Pending", p.Name, p.Spec.NodeName, p.Status.Phase)
		}
	}
}

func TestGarbageCollection(t *testing.T) {
	ctx := context.Background()
	namespace(t, "gc")

	t.Run("foreground deletion removes the dependents, then the owner", func(t *testing.T) {
		d := deployment("gc", "fg", 2)
		if err := env.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		waitPods(t, "gc", 2)
		if err := env.Client.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the Deployment gone after its ReplicaSet and pods", func() error {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(d), &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("Deployment still there (%v)", err)
			}
			return nil
		})
		if n := len(list(t, &appsv1.ReplicaSetList{}, "gc").Items); n != 0 {
			t.Errorf("%d ReplicaSets left after the foreground deletion of their Deployment", n)
		}
		if n := len(list(t, &corev1.PodList{}, "gc").Items); n != 0 {
			t.Errorf("%d pods left after the foreground deletion of their Deployment", n)
		}
	})

	t.Run("background deletion of an owner collects a ConfigMap it owns", func(t *testing.T) {
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "gc", Name: "owner"}}
		if err := env.Client.Create(ctx, owner); err != nil {
			t.Fatal(err)
		}
		dep := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "gc", Name: "dependent",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}}}}
		if err := env.Client.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Delete(ctx, owner); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the dependent collected", func() error {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dep), &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("dependent still there (%v)", err)
			}
			return nil
		})
	})

	t.Run("orphan deletion keeps the dependents and drops their owner reference", func(t *testing.T) {
		d := deployment("gc", "orphan", 2)
		if err := env.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		waitPods(t, "gc", 2)
		rs := list(t, &appsv1.ReplicaSetList{}, "gc").Items[0]
		if err := env.Client.Delete(ctx, &rs, client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the ReplicaSet gone and its pods orphaned", func() error {
			// The Deployment controller makes a new ReplicaSet, with the same name
			// (the pod template's hash): this one is gone when its UID is.
			got := &appsv1.ReplicaSet{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(&rs), got); err == nil && got.UID == rs.UID {
				return fmt.Errorf("ReplicaSet %s still there: finalizers %v", rs.Name, got.Finalizers)
			} else if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			for _, p := range list(t, &corev1.PodList{}, "gc").Items {
				for _, ref := range p.OwnerReferences {
					if ref.UID == rs.UID {
						return fmt.Errorf("pod %s still names ReplicaSet %s", p.Name, rs.Name)
					}
				}
			}
			return nil
		})
		// The orphans are still there: the GC did not delete them. (The new
		// ReplicaSet may adopt them, which is how Deployments work.)
		if n := len(list(t, &corev1.PodList{}, "gc").Items); n < 2 {
			t.Errorf("%d pods left after the orphaning delete, want the 2 orphans", n)
		}
	})
}

func TestNamespaceDeletion(t *testing.T) {
	ctx := context.Background()
	namespace(t, "doomed")
	if err := env.Client.Create(ctx, deployment("doomed", "web", 1)); err != nil {
		t.Fatal(err)
	}
	waitPods(t, "doomed", 1)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}
	if err := env.Client.Delete(ctx, ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the namespace deleted", func() error {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace %s: phase %s, conditions %v (%v)", ns.Name, ns.Status.Phase, ns.Status.Conditions, err)
	})
}

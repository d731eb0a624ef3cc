package rollout

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func rollout(name string, phase v1alpha1.RolloutPhase, labels map[string]string) v1alpha1.MTLSRollout {
	return v1alpha1.MTLSRollout{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.MTLSRolloutSpec{NamespaceSelector: metav1.LabelSelector{MatchLabels: labels}},
		Status:     v1alpha1.MTLSRolloutStatus{Phase: phase},
	}
}

func TestConflicts(t *testing.T) {
	namespaces := map[string]map[string]string{
		"shop-b": {"team": "shop"}, "shop-a": {"team": "shop"}, "bank": {"team": "bank"},
	}
	shop := map[string]string{"team": "shop"}
	tests := []struct {
		name   string
		mine   v1alpha1.MTLSRollout
		others []v1alpha1.MTLSRollout
		want   string
	}{
		{"should name an unfinished rollout and the namespaces both select, sorted",
			rollout("all", "", nil), []v1alpha1.MTLSRollout{rollout("shop", v1alpha1.RolloutProgressing, shop)},
			"[{shop Progressing [shop-a shop-b]}]"},
		{"should count a rollout that has not started as unfinished",
			rollout("all", "", nil), []v1alpha1.MTLSRollout{rollout("shop", "", shop)},
			"[{shop  [shop-a shop-b]}]"},
		{"should ignore finished rollouts",
			rollout("all", "", nil), []v1alpha1.MTLSRollout{rollout("a", v1alpha1.RolloutSucceeded, shop), rollout("b", v1alpha1.RolloutRolledBack, shop), rollout("c", v1alpha1.RolloutFailed, shop)},
			"[]"},
		{"should ignore the rollout's own old version",
			rollout("shop", "", shop), []v1alpha1.MTLSRollout{rollout("shop", v1alpha1.RolloutProgressing, shop)},
			"[]"},
		{"should ignore rollouts of other namespaces",
			rollout("bank", "", map[string]string{"team": "bank"}), []v1alpha1.MTLSRollout{rollout("shop", v1alpha1.RolloutProgressing, shop)},
			"[]"},
		{"should refuse the same selector even when it selects no namespace yet",
			rollout("new", "", map[string]string{"team": "new"}), []v1alpha1.MTLSRollout{rollout("other", v1alpha1.RolloutPaused, map[string]string{"team": "new"})},
			"[{other Paused []}]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Conflicts(&tt.mine, tt.others, namespaces)
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(got); s != tt.want {
				t.Errorf("got %s, want %s", s, tt.want)
			}
		})
	}
}

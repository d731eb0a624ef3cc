package controllers

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

func TestWorkloadStatusConditions(t *testing.T) {
	p := &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "finance", Generation: 3}}
	type cond struct {
		status metav1.ConditionStatus
		reason string
	}
	tests := []struct {
		name    string
		verdict policy.WorkloadStatus
		want    map[string]cond
		message string // a fragment of the Ready or Conflicted message
	}{
		{"should be Ready when accepted and unconflicted",
			policy.WorkloadStatus{SelectedPods: 2},
			map[string]cond{"Accepted": {"True", "Accepted"}, "Conflicted": {"False", "NoConflict"}, "MinimumModeApplied": {"False", "AtOrAboveMinimumMode"}, "Ready": {"True", "Reconciled"}},
			"decides for 2 meshed pods"},
		{"should say every mode is at or above the floor when none is below it",
			policy.WorkloadStatus{},
			map[string]cond{"MinimumModeApplied": {"False", "AtOrAboveMinimumMode"}},
			"every mode of this policy is at or above the mesh minimumMode"},
		{"should not be Accepted, nor Ready, when a targetRef names a missing Service",
			policy.WorkloadStatus{MissingServices: []string{"checkout"}},
			map[string]cond{"Accepted": {"False", "TargetNotFound"}, "Ready": {"False", "TargetNotFound"}},
			"checkout"},
		{"should be Conflicted, and not Ready, naming at most five pods and the winner",
			policy.WorkloadStatus{ConflictedPods: []string{"a", "b", "c", "d", "e", "f"}, Winners: []string{"old"}},
			map[string]cond{"Accepted": {"True", "Accepted"}, "Conflicted": {"True", "Conflicted"}, "Ready": {"False", "Conflicted"}},
			"a, b, c, d, e and 1 more are also selected by the older WorkloadMTLSPolicy old"},
		{"should stay Accepted and say so when the floor raises it",
			policy.WorkloadStatus{BelowFloor: true},
			map[string]cond{"Accepted": {"True", "Accepted"}, "MinimumModeApplied": {"True", "BelowMinimumMode"}, "Ready": {"True", "Reconciled"}},
			"a mode of this policy is below the mesh minimumMode STRICT and is raised to it"},
		{"should not be Accepted when invalid",
			policy.WorkloadStatus{Invalid: "spec.selector may not be empty"},
			map[string]cond{"Accepted": {"False", "Invalid"}, "Ready": {"False", "Invalid"}},
			"may not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := workloadStatus(p, tt.verdict, v1alpha1.ModeStrict)
			if got.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d", got.ObservedGeneration)
			}
			messages := ""
			for typ, want := range tt.want {
				c := meta.FindStatusCondition(got.Conditions, typ)
				if c == nil {
					t.Errorf("no %s condition", typ)
					continue
				}
				if c.Status != want.status || c.Reason != want.reason || c.ObservedGeneration != 3 {
					t.Errorf("%s = %s/%s (gen %d), want %s/%s", typ, c.Status, c.Reason, c.ObservedGeneration, want.status, want.reason)
				}
				messages += c.Message + "\n"
			}
			if !strings.Contains(messages, tt.message) {
				t.Errorf("no message contains %q:\n%s", tt.message, messages)
			}
		})
	}
}

func TestConditionTransitionTimeKeptWhenUnchanged(t *testing.T) {
	p := &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "finance", Generation: 1}}
	first := workloadStatus(p, policy.WorkloadStatus{SelectedPods: 1}, v1alpha1.ModeDisable)
	p.Status = first
	second := workloadStatus(p, policy.WorkloadStatus{SelectedPods: 1}, v1alpha1.ModeDisable)
	a, b := meta.FindStatusCondition(first.Conditions, "Ready"), meta.FindStatusCondition(second.Conditions, "Ready")
	if !a.LastTransitionTime.Equal(&b.LastTransitionTime) {
		t.Error("an unchanged condition must keep its lastTransitionTime, or every resync writes status")
	}
}

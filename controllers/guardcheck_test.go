package controllers

import (
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
)

func TestGuardState(t *testing.T) {
	const operator = "system:serviceaccount:meshtls-system:meshtls-operator"
	policy := &admissionv1.ValidatingAdmissionPolicy{Spec: admissionv1.ValidatingAdmissionPolicySpec{
		Variables: []admissionv1.Variable{{Name: "operator", Expression: "'" + operator + "'"}},
	}}
	binding := func(name string, actions ...admissionv1.ValidationAction) *admissionv1.ValidatingAdmissionPolicyBinding {
		return &admissionv1.ValidatingAdmissionPolicyBinding{Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name, ValidationActions: actions}}
	}
	for _, tc := range []struct {
		name       string
		policy     *admissionv1.ValidatingAdmissionPolicy
		binding    *admissionv1.ValidatingAdmissionPolicyBinding
		user       string
		installed  bool
		reason     string
		messageHas string
	}{
		{"nothing installed says how to install it", nil, nil, operator, false, ReasonGuardNotInstalled, GuardInstallCommand},
		{"a binding without its policy is not a guard", nil, binding(GuardName, admissionv1.Deny), operator, false, ReasonGuardNotInstalled, GuardInstallCommand},
		{"a policy without a binding is not in force", policy, nil, operator, false, ReasonGuardNotBound, GuardInstallCommand},
		{"a binding of another policy does not count", policy, binding("other", admissionv1.Deny), operator, false, ReasonGuardNotBound, `"other"`},
		{"a binding that only warns does not deny", policy, binding(GuardName, admissionv1.Warn, admissionv1.Audit), operator, false, ReasonGuardNotEnforced, "[Deny]"},
		{"a guard naming another operator refuses this one", policy, binding(GuardName, admissionv1.Deny), "system:serviceaccount:operators:meshtls-operator", false, ReasonGuardNamesAnotherOperator, "kustomize edit set namespace operators"},
		{"an operator outside meshtls-system is told to set the guard's namespace", nil, nil, "system:serviceaccount:operators:meshtls-operator", false, ReasonGuardNotInstalled, "kustomize edit set namespace operators"},
		{"policy and denying binding naming this operator", policy, binding(GuardName, admissionv1.Deny), operator, true, ReasonGuardInstalled, "installed"},
		{"no operator user to check", policy, binding(GuardName, admissionv1.Deny, admissionv1.Audit), "", true, ReasonGuardInstalled, "installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			installed, reason, message := GuardState(tc.policy, tc.binding, tc.user)
			if installed != tc.installed || reason != tc.reason || !strings.Contains(message, tc.messageHas) {
				t.Errorf("GuardState = %v, %s, %q; want %v, %s, a message with %q", installed, reason, message, tc.installed, tc.reason, tc.messageHas)
			}
		})
	}
}

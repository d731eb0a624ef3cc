package policy

import (
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// requirement is one label requirement in a canonical form: matchLabels entries are
// written as In requirements with one value, values are sorted and unique.
type requirement struct {
	key    string
	op     metav1.LabelSelectorOperator
	values []string
}

// canonicalRequirements turns a label selector into sorted, de-duplicated
// requirements, so that two selectors asking for the same thing compare equal
// whatever their spelling and order.
func canonicalRequirements(s *metav1.LabelSelector) []requirement {
	if s == nil {
		return nil
	}
	var reqs []requirement
	for k, v := range s.MatchLabels {
		reqs = append(reqs, requirement{key: k, op: metav1.LabelSelectorOpIn, values: []string{v}})
	}
	for _, e := range s.MatchExpressions {
		values := slices.Clone(e.Values)
		slices.Sort(values)
		reqs = append(reqs, requirement{key: e.Key, op: e.Operator, values: slices.Compact(values)})
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].String() < reqs[j].String() })
	return slices.CompactFunc(reqs, func(a, b requirement) bool { return a.String() == b.String() })
}

func (r requirement) String() string {
	return r.key + " " + string(r.op) + " (" + strings.Join(r.values, ",") + ")"
}

// SelectorKey is a canonical string of a label selector: equal for selectors with the
// same requirements once matchLabels are written as In requirements.
func SelectorKey(s *metav1.LabelSelector) string {
	reqs := canonicalRequirements(s)
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, "; ")
}

// mayOverlap reports whether some label set could satisfy both requirement lists: it
// is false only when a key is constrained in contradicting ways.
func mayOverlap(a, b []requirement) bool {
	for _, x := range a {
		for _, y := range b {
			if x.key == y.key && contradicts(x, y) {
				return false
			}
		}
	}
	return true
}

func contradicts(x, y requirement) bool {
	present := func(r requirement) bool {
		return r.op == metav1.LabelSelectorOpIn || r.op == metav1.LabelSelectorOpExists
	}
	switch {
	case x.op == metav1.LabelSelectorOpDoesNotExist:
		return present(y)
	case y.op == metav1.LabelSelectorOpDoesNotExist:
		return present(x)
	case x.op == metav1.LabelSelectorOpIn && y.op == metav1.LabelSelectorOpIn:
		for _, v := range x.values {
			if slices.Contains(y.values, v) {
				return false
			}
		}
		return true
	case x.op == metav1.LabelSelectorOpIn && y.op == metav1.LabelSelectorOpNotIn:
		return subset(x.values, y.values)
	case x.op == metav1.LabelSelectorOpNotIn && y.op == metav1.LabelSelectorOpIn:
		return subset(y.values, x.values)
	}
	return false
}

func subset(a, b []string) bool {
	for _, v := range a {
		if !slices.Contains(b, v) {
			return false
		}
	}
	return true
}

func matchLabelsRequirements(m map[string]string) []requirement {
	return canonicalRequirements(&metav1.LabelSelector{MatchLabels: m})
}

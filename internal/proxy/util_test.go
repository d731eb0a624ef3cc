package proxy

import (
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func itoa(i int) string { return strconv.Itoa(i) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// counterValue sums a metric over the series whose labels include want.
func counterValue(t *testing.T, m *Metrics, name string, want map[string]string) float64 {
	t.Helper()
	return m.Value(name, want)
}

func matches(s *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range s.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

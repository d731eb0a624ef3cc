package metricsauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
)

// countingReviewer knows one token and allows one user; it counts the API calls.
type countingReviewer struct{ reviews, checks int }

func (c *countingReviewer) TokenReview(_ context.Context, token string) (authnv1.UserInfo, bool, error) {
	c.reviews++
	return authnv1.UserInfo{Username: "u-" + token}, token == "good" || token == "other", nil
}

func (c *countingReviewer) Allowed(_ context.Context, u authnv1.UserInfo, verb, path string) (bool, error) {
	c.checks++
	return u.Username == "u-good" && verb == "get" && path == "/metrics", nil
}

func TestFilterCachesVerdicts(t *testing.T) {
	r := &countingReviewer{}
	f := New(r)
	now := time.Unix(0, 0)
	f.now = func() time.Time { return now }
	h := f.Wrap(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	do := func(token string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tt := range []struct {
		name            string
		token           string
		advance         time.Duration
		want            int
		reviews, checks int
	}{
		{"should allow a permitted token", "good", 0, 200, 1, 1},
		{"should answer a repeat from the cache", "good", time.Second, 200, 1, 1},
		{"should refuse a token without the permission", "other", 0, 403, 2, 2},
		{"should refuse an unknown token", "bad", 0, 401, 3, 2},
		{"should refuse no token without asking", "", 0, 401, 3, 2},
		{"should ask again once the denial expired (the token review still cached)", "other", 31 * time.Second, 403, 3, 3},
		{"should ask again once the token review and the verdict expired", "good", 6 * time.Minute, 200, 4, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now = now.Add(tt.advance)
			if got := do(tt.token); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
			if r.reviews != tt.reviews || r.checks != tt.checks {
				t.Errorf("API calls: %d token reviews, %d access reviews; want %d, %d", r.reviews, r.checks, tt.reviews, tt.checks)
			}
		})
	}
}

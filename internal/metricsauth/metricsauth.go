// Package metricsauth protects the manager's metrics endpoint the way the API server
// protects its own: the caller's bearer token is checked with a TokenReview, and the
// caller must be allowed to "get" the non-resource URL it asks for (a
// SubjectAccessReview), as config/rbac's metrics-reader ClusterRole grants.
//
// controller-runtime's filters package does the same through k8s.io/apiserver's
// delegating authenticator and authorizer, which link the API server's CEL,
// OpenTelemetry and gRPC stacks into the manager: tens of MiB of resident binary
// for two API calls. This is those two calls, with the same caching (allowed verdicts
// for 5 minutes, denials for 30 seconds, token reviews for a minute).
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Cache lifetimes, as controller-runtime's filter sets them.
const (
	tokenTTL = time.Minute
	allowTTL = 5 * time.Minute
	denyTTL  = 30 * time.Second
	// maxEntries bounds each cache; past it, the cache is emptied.
	maxEntries = 1024
)

// Reviewer asks the API server who a token is and what it may do.
type Reviewer interface {
	TokenReview(ctx context.Context, token string) (user authnv1.UserInfo, ok bool, err error)
	Allowed(ctx context.Context, user authnv1.UserInfo, verb, path string) (bool, error)
}

// Provider is a metricsserver.Options.FilterProvider.
func Provider(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	cs, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("failed to build the metrics authorization client: %w", err)
	}
	f := New(apiReviewer{cs})
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return f.Wrap(log, next), nil
	}, nil
}

// Filter authenticates and authorizes requests, caching the API server's answers.
type Filter struct {
	reviewer Reviewer
	now      func() time.Time
	mu       sync.Mutex
	users    map[[32]byte]cachedUser
	verdicts map[string]cachedVerdict
}

type cachedUser struct {
	user    authnv1.UserInfo
	ok      bool
	expires time.Time
}

type cachedVerdict struct {
	allowed bool
	expires time.Time
}

// New returns a filter that asks r.
func New(r Reviewer) *Filter {
	return &Filter{reviewer: r, now: time.Now, users: map[[32]byte]cachedUser{}, verdicts: map[string]cachedVerdict{}}
}

// Wrap protects next.
func (f *Filter) Wrap(log logr.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token, found := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !found || token == "" {
			http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
			return
		}
		user, ok, err := f.authenticate(req.Context(), token)
		if err != nil {
			log.Error(err, "metrics: token review failed")
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		allowed, err := f.authorize(req.Context(), user, strings.ToLower(req.Method), req.URL.Path)
		if err != nil {
			log.Error(err, "metrics: subject access review failed")
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		if !allowed {
			http.Error(w, fmt.Sprintf("Forbidden: %s may not %s %s", user.Username, req.Method, req.URL.Path), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, req)
	})
}

func (f *Filter) authenticate(ctx context.Context, token string) (authnv1.UserInfo, bool, error) {
	key := sha256.Sum256([]byte(token)) // the cache never holds a token itself
	now := f.now()
	f.mu.Lock()
	c, hit := f.users[key]
	f.mu.Unlock()
	if hit && now.Before(c.expires) {
		return c.user, c.ok, nil
	}
	user, ok, err := f.reviewer.TokenReview(ctx, token)
	if err != nil {
		return user, false, err
	}
	f.mu.Lock()
	if len(f.users) >= maxEntries {
		f.users = map[[32]byte]cachedUser{}
	}
	f.users[key] = cachedUser{user: user, ok: ok, expires: now.Add(tokenTTL)}
	f.mu.Unlock()
	return user, ok, nil
}

func (f *Filter) authorize(ctx context.Context, user authnv1.UserInfo, verb, path string) (bool, error) {
	key := strings.Join([]string{user.Username, user.UID, strings.Join(user.Groups, ","), verb, path}, "\x00")
	now := f.now()
	f.mu.Lock()
	c, hit := f.verdicts[key]
	f.mu.Unlock()
	if hit && now.Before(c.expires) {
		return c.allowed, nil
	}
	allowed, err := f.reviewer.Allowed(ctx, user, verb, path)
	if err != nil {
		return false, err
	}
	ttl := denyTTL
	if allowed {
		ttl = allowTTL
	}
	f.mu.Lock()
	if len(f.verdicts) >= maxEntries {
		f.verdicts = map[string]cachedVerdict{}
	}
	f.verdicts[key] = cachedVerdict{allowed: allowed, expires: now.Add(ttl)}
	f.mu.Unlock()
	return allowed, nil
}

// apiReviewer asks the API server.
type apiReviewer struct{ cs kubernetes.Interface }

func (a apiReviewer) TokenReview(ctx context.Context, token string) (authnv1.UserInfo, bool, error) {
	tr, err := a.cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.UserInfo{}, false, err
	}
	return tr.Status.User, tr.Status.Authenticated, nil
}

func (a apiReviewer) Allowed(ctx context.Context, user authnv1.UserInfo, verb, path string) (bool, error) {
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := a.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authzv1.NonResourceAttributes{Verb: verb, Path: path},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}

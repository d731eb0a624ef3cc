// Package scheme builds the runtime.Scheme the manager, the tests and the tools share.
package scheme

import (
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	securityv1alpha1 "github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// New returns a scheme with client-go's kinds, the security.meshtls.io API, and
// cert-manager's certificates API (the operator keeps workload Certificates).
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(securityv1alpha1.AddToScheme(s))
	utilruntime.Must(cmapi.AddToScheme(s))
	return s
}

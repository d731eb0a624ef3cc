// Package inject turns a pod into a meshed pod: it adds the meshtls-proxy native
// sidecar, the traffic-capture init container, the certificate, trust-bundle and token
// volumes, and rewrites HTTP and TCP probes so that kubelet reaches the application
// through the proxy's health port even when the application's ports are STRICT. It is
// pure (a pod in, a pod out) and idempotent: injecting an injected pod changes nothing.
package inject

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/internal/capture"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// Names of what injection adds, and the annotations it reads and writes.
const (
	ProxyContainer   = "meshtls-proxy"
	CaptureContainer = "meshtls-init"
	CertVolume       = "meshtls-certs"
	TrustVolume      = "meshtls-trust"
	TokenVolume      = "meshtls-token"

	CertDir  = "/var/run/meshtls/certs"
	TrustDir = "/var/run/meshtls/trust"
	TokenDir = "/var/run/meshtls/token"

	InboundPort  = 15006
	OutboundPort = 15001
	MetricsPort  = 15090
	HealthPort   = 15021

	// AnnotationInjected marks an injected pod (the value is the proxy image).
	AnnotationInjected = "meshtls.io/injected"
	// AnnotationOriginalProbes keeps the probes injection rewrote, as JSON keyed by
	// "<container>/<liveness|readiness|startup>".
	AnnotationOriginalProbes = "meshtls.io/original-probes"
	// AnnotationExcludeInboundPorts lists inbound ports not to capture ("8081,9000").
	AnnotationExcludeInboundPorts = "meshtls.io/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts lists outbound ports not to capture.
	AnnotationExcludeOutboundPorts = "meshtls.io/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs lists outbound IP ranges not to capture.
	AnnotationExcludeOutboundCIDRs = "meshtls.io/exclude-outbound-ip-ranges"
)

// Config is what the manager's flags set.
type Config struct {
	// ProxyImage runs both the proxy and the capture step.
	ProxyImage string
	// ProxyUID is the user the proxy runs as; capture lets its traffic through.
	ProxyUID int64
	// ProxyResources and CaptureResources are the containers' requests and limits.
	ProxyResources   corev1.ResourceRequirements
	CaptureResources corev1.ResourceRequirements
}

// DefaultConfig is the manager's default.
func DefaultConfig() Config {
	return Config{
		ProxyImage: "ghcr.io/meshtls/meshtls-proxy:dev",
		ProxyUID:   1337,
		ProxyResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		CaptureResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
	}
}

// Resources builds resource requirements from flag values; an empty value sets
// nothing.
func Resources(cpuRequest, memoryRequest, cpuLimit, memoryLimit string) (corev1.ResourceRequirements, error) {
	var out corev1.ResourceRequirements
	for _, q := range []struct {
		list  *corev1.ResourceList
		name  corev1.ResourceName
		value string
		flag  string
	}{
		{&out.Requests, corev1.ResourceCPU, cpuRequest, "--proxy-cpu-request"},
		{&out.Requests, corev1.ResourceMemory, memoryRequest, "--proxy-memory-request"},
		{&out.Limits, corev1.ResourceCPU, cpuLimit, "--proxy-cpu-limit"},
		{&out.Limits, corev1.ResourceMemory, memoryLimit, "--proxy-memory-limit"},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return out, fmt.Errorf("%s=%q is not a quantity (e.g. 50m, 32Mi): %w", q.flag, q.value, err)
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = v
	}
	return out, nil
}

// Injected reports whether a pod already carries the proxy.
func Injected(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ProxyContainer {
			return true
		}
	}
	return false
}

// Skip says why a pod must not be injected, or "" when it may be.
func Skip(pod *corev1.Pod) string {
	if pod.Spec.HostNetwork {
		return "the pod uses the host network, which the proxy cannot capture without capturing the node"
	}
	return ""
}

// Inject adds the proxy to pod in place. It returns an error only for input it cannot
// inject safely (a container already named like ours, a bad exclusion annotation).
func Inject(pod *corev1.Pod, cfg Config) error {
	if Injected(pod) {
		return nil
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == CaptureContainer {
			return fmt.Errorf("spec: the container name %q is reserved for the meshtls capture step; rename the container", c.Name)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == CertVolume || v.Name == TrustVolume || v.Name == TokenVolume {
			return fmt.Errorf("spec.volumes: the volume name %q is reserved for meshtls; rename the volume", v.Name)
		}
	}
	capture, err := captureContainer(pod, cfg)
	if err != nil {
		return err
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if err := rewriteProbes(pod); err != nil {
		return err
	}
	if pod.Spec.ServiceAccountName == "" {
		// What the ServiceAccount admission plugin would set; the proxy's projected
		// token needs it spelled out.
		pod.Spec.ServiceAccountName = "default"
	}
	// The capture step first, then the proxy as a native sidecar that starts before,
	// and stops after, the application's containers.
	pod.Spec.InitContainers = append([]corev1.Container{capture, proxyContainer(pod, cfg)}, pod.Spec.InitContainers...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes(pod)...)
	pod.Annotations[AnnotationInjected] = cfg.ProxyImage
	return nil
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

func parsePorts(pod *corev1.Pod, annotation string, extra ...int) (string, error) {
	ports := map[int]bool{}
	for _, p := range extra {
		ports[p] = true
	}
	if v := strings.TrimSpace(pod.Annotations[annotation]); v != "" {
		for _, f := range strings.Split(v, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || p < 1 || p > 65535 {
				return "", fmt.Errorf("metadata.annotations[%s]: %q is not a comma-separated list of ports 1-65535", annotation, v)
			}
			ports[p] = true
		}
	}
	list := make([]int, 0, len(ports))
	for p := range ports {
		list = append(list, p)
	}
	sort.Ints(list)
	out := make([]string, len(list))
	for i, p := range list {
		out[i] = strconv.Itoa(p)
	}
	return strings.Join(out, ","), nil
}

func captureContainer(pod *corev1.Pod, cfg Config) (corev1.Container, error) {
	inbound, err := parsePorts(pod, AnnotationExcludeInboundPorts, MetricsPort, HealthPort)
	if err != nil {
		return corev1.Container{}, err
	}
	outbound, err := parsePorts(pod, AnnotationExcludeOutboundPorts)
	if err != nil {
		return corev1.Container{}, err
	}
	args := []string{
		"capture",
		"--inbound-port=" + strconv.Itoa(InboundPort),
		"--outbound-port=" + strconv.Itoa(OutboundPort),
		"--proxy-uid=" + strconv.FormatInt(cfg.ProxyUID, 10),
		"--exclude-inbound-ports=" + inbound,
	}
	if outbound != "" {
		args = append(args, "--exclude-outbound-ports="+outbound)
	}
	// The same parser as the capture step's, so that a range the step would
	// refuse fails admission with the annotation's name instead of leaving the
	// pod in Init:CrashLoopBackOff.
	cidrs, err := capture.ParseCIDRs(pod.Annotations[AnnotationExcludeOutboundCIDRs])
	if err != nil {
		return corev1.Container{}, fmt.Errorf("metadata.annotations[%s]: %w", AnnotationExcludeOutboundCIDRs, err)
	}
	if len(cidrs) > 0 {
		list := make([]string, len(cidrs))
		for i, c := range cidrs {
			list[i] = c.String()
		}
		args = append(args, "--exclude-outbound-ip-ranges="+strings.Join(list, ","))
	}
	// Capture lets the proxy's UID through; an application container running as
	// that user would send its outbound traffic around the proxy unseen.
	// Injection's own containers are not in the pod yet.
	if sc := pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == cfg.ProxyUID {
		return corev1.Container{}, fmt.Errorf("spec.securityContext.runAsUser: %d is the meshtls proxy's user ID, whose traffic capture lets through; run the application as another user", cfg.ProxyUID)
	}
	for _, cs := range []struct {
		field string
		list  []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for _, c := range cs.list {
			if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == cfg.ProxyUID {
				return corev1.Container{}, fmt.Errorf("spec.%s[%s].securityContext.runAsUser: %d is the meshtls proxy's user ID, whose traffic capture lets through; run the application as another user", cs.field, c.Name, cfg.ProxyUID)
			}
		}
	}
	return corev1.Container{
		Name:      CaptureContainer,
		Image:     cfg.ProxyImage,
		Args:      args,
		Resources: cfg.CaptureResources,
		SecurityContext: &corev1.SecurityContext{
			// The step programs nftables through netlink: root with NET_ADMIN in the
			// pod's network namespace, in this short-lived step only. No NET_RAW:
			// unlike iptables-legacy, nf_tables netlink needs no raw socket.
			RunAsUser:                ptr.To[int64](0),
			RunAsGroup:               ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"NET_ADMIN"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}, nil
}

func proxyContainer(pod *corev1.Pod, cfg Config) corev1.Container {
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	return corev1.Container{
		Name:          ProxyContainer,
		Image:         cfg.ProxyImage,
		Args:          []string{"proxy"},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Ports: []corev1.ContainerPort{
			{Name: "meshtls-metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
			{Name: "meshtls-health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
		},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: field("metadata.name")},
			{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
			{Name: "POD_UID", ValueFrom: field("metadata.uid")},
			{Name: "SERVICE_ACCOUNT", ValueFrom: field("spec.serviceAccountName")},
			{Name: "MESHTLS_CERT_DIR", Value: CertDir},
			{Name: "MESHTLS_TRUST_DIR", Value: TrustDir},
			{Name: "MESHTLS_TOKEN_FILE", Value: TokenDir + "/token"},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(HealthPort)}},
			PeriodSeconds:    2,
			FailureThreshold: 3,
		},
		Resources: cfg.ProxyResources,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To(cfg.ProxyUID),
			RunAsGroup:               ptr.To(cfg.ProxyUID),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: CertVolume, MountPath: CertDir, ReadOnly: true},
			{Name: TrustVolume, MountPath: TrustDir, ReadOnly: true},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
		},
	}
}

// volumes are optional, so the pod starts before its certificate and bundle exist;
// the token is the pod's own, bound to it, for the proxy to read its PodProxyConfig
// and write its status even when the application's token is not mounted.
func volumes(pod *corev1.Pod) []corev1.Volume {
	return []corev1.Volume{
		{Name: CertVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: identity.CertificateSecretName(serviceAccount(pod)), Optional: ptr.To(true),
		}}},
		{Name: TrustVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: identity.TrustBundleConfigMapName}, Optional: ptr.To(true),
		}}},
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3600)}}},
		}}},
	}
}

// rewriteProbes points HTTP and TCP probes of the application containers at the
// proxy's health port, which runs the original probe against the application on
// localhost; the originals are kept in an annotation. gRPC and exec probes are left
// alone (gRPC goes through the proxy like any client; exec does not use the network).
func rewriteProbes(pod *corev1.Pod) error {
	originals := map[string]*corev1.Probe{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for kind, probe := range map[string]**corev1.Probe{"liveness": &c.LivenessProbe, "readiness": &c.ReadinessProbe, "startup": &c.StartupProbe} {
			p := *probe
			if p == nil || (p.HTTPGet == nil && p.TCPSocket == nil) {
				continue
			}
			originals[c.Name+"/"+kind] = p.DeepCopy()
			rewritten := p.DeepCopy()
			rewritten.TCPSocket = nil
			rewritten.HTTPGet = &corev1.HTTPGetAction{Path: "/app-health/" + c.Name + "/" + kind, Port: intstr.FromInt32(HealthPort), Scheme: corev1.URISchemeHTTP}
			*probe = rewritten
		}
	}
	if len(originals) == 0 {
		return nil
	}
	b, err := json.Marshal(originals)
	if err != nil {
		return err
	}
	pod.Annotations[AnnotationOriginalProbes] = string(b)
	return nil
}

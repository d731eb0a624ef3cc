// Package inject turns a pod into a meshed pod: it adds the meshtls-proxy native
// sidecar, the traffic-capture init container, the certificate, trust-bundle and token
// volumes, and rewrites HTTP and TCP probes so that kubelet reaches the application
// through the proxy's health port even when the application's ports are STRICT. It is
// pure (a pod in, a pod out) and idempotent: injecting an injected pod changes nothing.
package inject

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/internal/capture"
	"github.com/meshtls/meshtls-operator/internal/identity"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// Names of what injection adds, and the annotations it reads and writes.
const (
	ProxyContainer   = policy.ProxyContainerName
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
	AnnotationExcludeInboundPorts = policy.AnnotationExcludeInboundPorts
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

// Injected reports whether a pod carries anything named like what injection adds: a
// container or init container named meshtls-proxy or meshtls-init, or a meshtls
// volume. Such a pod is either one the injector already injected (Verify says so) or
// one to refuse.
func Injected(pod *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == ProxyContainer || c.Name == CaptureContainer {
			return true
		}
	}
	for _, v := range pod.Spec.Volumes {
		if ourVolume(v.Name) {
			return true
		}
	}
	return false
}

func ourVolume(name string) bool {
	return name == CertVolume || name == TrustVolume || name == TokenVolume
}

// Verify checks that a pod which arrives carrying meshtls containers or volumes
// carries exactly what Inject would have produced for it (a reinvocation of the
// webhook, or a pod re-created from an injected template). It strips what injection
// adds, injects again and compares. Anything else is forged or stale — a proxy
// container with another image, arguments, privileges or environment — and is
// refused: a pod must never pass for protected while running a proxy that is not
// ours. Volume mounts that later admission plugins add to every container are
// tolerated; nothing else is.
func Verify(pod *corev1.Pod, cfg Config) error {
	for _, c := range pod.Spec.Containers {
		if c.Name == ProxyContainer || c.Name == CaptureContainer {
			return fmt.Errorf("spec.containers: %q is the name of a meshtls init container and may not be an ordinary container; remove or rename it", c.Name)
		}
	}
	base := pod.DeepCopy()
	if err := strip(base); err != nil {
		return err
	}
	if err := Inject(base, cfg); err != nil {
		return err
	}
	want := map[string]corev1.Container{}
	for _, c := range base.Spec.InitContainers {
		if c.Name == ProxyContainer || c.Name == CaptureContainer {
			want[c.Name] = c
		}
	}
	seen := 0
	for _, c := range pod.Spec.InitContainers {
		w, ours := want[c.Name]
		if !ours {
			continue
		}
		seen++
		got := c.DeepCopy()
		got.VolumeMounts = keepMounts(got.VolumeMounts)
		defaultContainer(got)
		defaultContainer(&w)
		if !equality.Semantic.DeepEqual(*got, w) {
			return fmt.Errorf("spec.initContainers[%s]: differs from what meshtls injection produces for this pod (image %q, proxy UID %d); remove the meshtls containers, volumes and meshtls.io/ annotations and let the webhook inject them", c.Name, cfg.ProxyImage, cfg.ProxyUID)
		}
	}
	if seen != len(want) {
		return fmt.Errorf("spec.initContainers: carries only part of meshtls injection (%d of %d containers); remove the meshtls containers, volumes and meshtls.io/ annotations and let the webhook inject them", seen, len(want))
	}
	wantVolumes := map[string]corev1.Volume{}
	for _, v := range base.Spec.Volumes {
		if ourVolume(v.Name) {
			wantVolumes[v.Name] = v
		}
	}
	for _, v := range pod.Spec.Volumes {
		if w, ours := wantVolumes[v.Name]; ours {
			got := v.DeepCopy()
			defaultVolume(got)
			defaultVolume(&w)
			if !equality.Semantic.DeepEqual(*got, w) {
				return fmt.Errorf("spec.volumes[%s]: differs from what meshtls injection produces for this pod; remove it and let the webhook inject it", v.Name)
			}
			delete(wantVolumes, v.Name)
		}
	}
	if len(wantVolumes) > 0 {
		return fmt.Errorf("spec.volumes: carries only part of meshtls injection; remove the meshtls containers, volumes and meshtls.io/ annotations and let the webhook inject them")
	}
	gotApps, wantApps := pod.DeepCopy().Spec.Containers, base.Spec.Containers
	for i := range gotApps {
		defaultContainer(&gotApps[i])
	}
	for i := range wantApps {
		defaultContainer(&wantApps[i])
	}
	if !equality.Semantic.DeepEqual(gotApps, wantApps) {
		return fmt.Errorf("spec.containers: the probes do not match the %s annotation; remove the meshtls containers, volumes and meshtls.io/ annotations and let the webhook inject them", AnnotationOriginalProbes)
	}
	return nil
}

// defaultContainer fills, where they are empty, the fields the API server defaults
// when it decodes a pod (k8s.io/kubernetes/pkg/apis/core/v1 defaults), so that what
// injection produced compares equal to what it became once stored or re-sent to the
// webhook. Only defaults: a field someone set to another value still differs.
func defaultContainer(c *corev1.Container) {
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
		if tag := c.Image[strings.LastIndex(c.Image, "/")+1:]; !strings.Contains(tag, ":") || strings.HasSuffix(tag, ":latest") {
			if !strings.Contains(c.Image, "@") {
				c.ImagePullPolicy = corev1.PullAlways
			}
		}
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if f := c.Env[i].ValueFrom; f != nil && f.FieldRef != nil && f.FieldRef.APIVersion == "" {
			f.FieldRef.APIVersion = "v1"
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = 1
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = 10
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = 1
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 3
		}
		if p.HTTPGet != nil && p.HTTPGet.Scheme == "" {
			p.HTTPGet.Scheme = corev1.URISchemeHTTP
		}
		if p.GRPC != nil && p.GRPC.Service == nil {
			p.GRPC.Service = new(string)
		}
	}
	if l := c.Resources.Limits; len(l) > 0 {
		for name, q := range l {
			if _, ok := c.Resources.Requests[name]; !ok {
				if c.Resources.Requests == nil {
					c.Resources.Requests = corev1.ResourceList{}
				}
				c.Resources.Requests[name] = q
			}
		}
	}
}

// defaultVolume fills the API server's defaults of the volume kinds injection uses.
func defaultVolume(v *corev1.Volume) {
	mode := int32(corev1.SecretVolumeSourceDefaultMode)
	switch {
	case v.Secret != nil && v.Secret.DefaultMode == nil:
		v.Secret.DefaultMode = &mode
	case v.ConfigMap != nil && v.ConfigMap.DefaultMode == nil:
		v.ConfigMap.DefaultMode = &mode
	case v.Projected != nil:
		if v.Projected.DefaultMode == nil {
			v.Projected.DefaultMode = &mode
		}
		for _, s := range v.Projected.Sources {
			if t := s.ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
				t.ExpirationSeconds = ptr.To[int64](3600)
			}
		}
	}
}

// serviceAccountMountPath is where the ServiceAccount admission plugin mounts the
// API token into every container, ours included.
const serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// keepMounts drops from got the one mount later admission adds to every container —
// the ServiceAccount token (a kube-api-access-* volume, read-only, at its fixed path)
// — so that it does not fail Verify. Any other extra mount stays and fails the
// comparison: a volume mounted over the proxy's binary or certificates is a forgery.
func keepMounts(got []corev1.VolumeMount) []corev1.VolumeMount {
	var out []corev1.VolumeMount
	for _, m := range got {
		if m.MountPath == serviceAccountMountPath && m.ReadOnly && m.SubPath == "" && m.SubPathExpr == "" &&
			strings.HasPrefix(m.Name, "kube-api-access-") {
			continue
		}
		out = append(out, m)
	}
	return out
}

// strip undoes Inject: it removes the meshtls containers, volumes and annotations and
// puts the original probes back.
func strip(pod *corev1.Pod) error {
	var originals map[string]*corev1.Probe
	if raw := pod.Annotations[AnnotationOriginalProbes]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &originals); err != nil {
			return fmt.Errorf("metadata.annotations[%s]: not the JSON meshtls injection writes: %v", AnnotationOriginalProbes, err)
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for kind, probe := range map[string]**corev1.Probe{"liveness": &c.LivenessProbe, "readiness": &c.ReadinessProbe, "startup": &c.StartupProbe} {
			if o, ok := originals[c.Name+"/"+kind]; ok {
				*probe = o
			}
		}
	}
	keep := pod.Spec.InitContainers[:0]
	for _, c := range pod.Spec.InitContainers {
		if c.Name != ProxyContainer && c.Name != CaptureContainer {
			keep = append(keep, c)
		}
	}
	pod.Spec.InitContainers = keep
	vols := pod.Spec.Volumes[:0]
	for _, v := range pod.Spec.Volumes {
		if !ourVolume(v.Name) {
			vols = append(vols, v)
		}
	}
	pod.Spec.Volumes = vols
	delete(pod.Annotations, AnnotationInjected)
	delete(pod.Annotations, AnnotationOriginalProbes)
	return nil
}

// ValidateEscapes refuses, in a pod to be injected, the containers that could undo
// capture from inside the pod: privileged ones, and ones that add NET_ADMIN,
// SYS_ADMIN or ALL (they can flush the pod's nftables rules). It is applied while the
// mesh floor is above DISABLE; Pod Security admission cannot do it in meshed
// namespaces, because the capture step itself needs NET_ADMIN.
func ValidateEscapes(pod *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	for _, cs := range []struct {
		field string
		list  []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for i, c := range cs.list {
			if c.Name == ProxyContainer || c.Name == CaptureContainer || c.SecurityContext == nil {
				continue
			}
			path := field.NewPath("spec", cs.field).Index(i).Child("securityContext")
			if c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
				errs = append(errs, field.Forbidden(path.Child("privileged"),
					"a privileged container can undo the pod's traffic capture, which the mesh minimumMode forbids; drop privileged, or opt the pod out (meshtls.io/inject: disabled) while the mesh minimumMode is DISABLE"))
			}
			if caps := c.SecurityContext.Capabilities; caps != nil {
				for j, capability := range caps.Add {
					switch strings.ToUpper(strings.TrimPrefix(string(capability), "CAP_")) {
					case "NET_ADMIN", "SYS_ADMIN", "ALL":
						errs = append(errs, field.Forbidden(path.Child("capabilities", "add").Index(j),
							fmt.Sprintf("%s lets a container undo the pod's traffic capture, which the mesh minimumMode forbids; drop it", capability)))
					}
				}
			}
		}
	}
	return errs
}

// ValidateAnnotations checks the capture annotations of a pod to be injected, so
// that a typo is refused at admission instead of failing the pod's capture step.
func ValidateAnnotations(pod *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	path := field.NewPath("metadata", "annotations")
	for _, a := range []string{AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts} {
		if _, err := policy.ParsePorts(pod.Annotations[a]); err != nil {
			errs = append(errs, field.Invalid(path.Key(a), pod.Annotations[a], fmt.Sprintf("must be a comma-separated list of ports 1-65535: %v", err)))
		}
	}
	if v := strings.TrimSpace(pod.Annotations[AnnotationExcludeOutboundCIDRs]); v != "" {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if _, err := netip.ParsePrefix(f); err != nil {
				errs = append(errs, field.Invalid(path.Key(AnnotationExcludeOutboundCIDRs), v,
					fmt.Sprintf("%q is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8); list ranges separated by commas", f)))
			}
		}
	}
	return errs
}

// Inject adds the proxy to pod in place. It returns an error only for input it cannot
// inject safely (a container already named like ours, a bad exclusion annotation).
func Inject(pod *corev1.Pod, cfg Config) error {
	if Injected(pod) {
		// Already injected, or forged: Verify decides which; Inject never injects twice.
		return Verify(pod, cfg)
	}
	capture, err := captureContainer(pod, cfg)
	if err != nil {
		return err
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	// Only injection writes this annotation: the proxy runs the probes it lists.
	delete(pod.Annotations, AnnotationOriginalProbes)
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
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
		{Name: "POD_UID", ValueFrom: field("metadata.uid")},
		{Name: "SERVICE_ACCOUNT", ValueFrom: field("spec.serviceAccountName")},
		{Name: "MESHTLS_CERT_DIR", Value: CertDir},
		{Name: "MESHTLS_TRUST_DIR", Value: TrustDir},
		{Name: "MESHTLS_TOKEN_FILE", Value: TokenDir + "/token"},
	}
	// The proxy runs the probes rewriteProbes moved to its health port, but cannot
	// read its pod's annotations: it gets them in MESHTLS_ORIGINAL_PROBES, the
	// annotation's JSON with named ports resolved to the container's port numbers
	// (the proxy does not see the application's container ports).
	var originals map[string]*corev1.Probe
	if raw := pod.Annotations[AnnotationOriginalProbes]; raw != "" && json.Unmarshal([]byte(raw), &originals) == nil {
		for key, p := range originals {
			container, _, _ := strings.Cut(key, "/")
			var port *intstr.IntOrString
			switch {
			case p.HTTPGet != nil:
				port = &p.HTTPGet.Port
			case p.TCPSocket != nil:
				port = &p.TCPSocket.Port
			}
			if port == nil || port.Type != intstr.String {
				continue
			}
			for _, c := range pod.Spec.Containers {
				for _, cp := range c.Ports {
					if c.Name == container && cp.Name == port.StrVal {
						*port = intstr.FromInt32(cp.ContainerPort)
					}
				}
			}
		}
		if b, err := json.Marshal(originals); err == nil {
			env = append(env, corev1.EnvVar{Name: "MESHTLS_ORIGINAL_PROBES", Value: string(b)})
		}
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
		Env: env,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(HealthPort)}},
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
		// The cluster CA (the kube-root-ca.crt ConfigMap every namespace has) beside the
		// token: the proxy verifies the API server with it.
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3600)}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
				}},
			},
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

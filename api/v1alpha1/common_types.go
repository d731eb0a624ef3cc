package v1alpha1

// Mode is an mTLS mode, spelled as Istio spells it.
//
// The order from weakest to strongest is DISABLE < PERMISSIVE < STRICT; UNSET is not
// a mode of its own but "inherit from the level above".
type Mode string

const (
	// ModeStrict accepts mutual TLS only.
	ModeStrict Mode = "STRICT"
	// ModePermissive accepts mutual TLS and plaintext on the same port.
	ModePermissive Mode = "PERMISSIVE"
	// ModeDisable accepts plaintext only; the proxy does not terminate TLS.
	ModeDisable Mode = "DISABLE"
	// ModeUnset inherits the mode of the level above (namespace and workload levels).
	ModeUnset Mode = "UNSET"
)

// MeshDefaultMode is the mesh mode when there is no MeshMTLSPolicy at all, as in Istio.
const MeshDefaultMode = ModePermissive

// PortMTLS sets the mTLS mode of one container (workload) port.
type PortMTLS struct {
	// port is the container port number the mode applies to, 1-65535. The proxy's
	// own ports 15000-15099 may not be named.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:validation:XValidation:rule="self < 15000 || self > 15099",message="port may not be one of the proxy's own ports 15000-15099"
	Port int32 `json:"port"`

	// mode is the mTLS mode of this port: STRICT, PERMISSIVE or DISABLE.
	// +required
	// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
	Mode Mode `json:"mode"`
}

// LocalObjectKeyReference names a key of an object in a known namespace.
type LocalObjectKeyReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key inside the object's data.
	// +optional
	// +kubebuilder:default="ca.crt"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

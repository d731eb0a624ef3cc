package bundle

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Version and images of the bundle `make bundle` writes. ProxyImage is the release
// tag of the image whose development tag is the manager's --proxy-image default
// (internal/inject.DefaultConfig).
const (
	Version    = "0.1.0"
	Image      = "ghcr.io/meshtls/meshtls-operator:v" + Version
	ProxyImage = "ghcr.io/meshtls/meshtls-proxy:v" + Version
)

// Kustomize builds a kustomization directory, as `kubectl apply -k` would.
func Kustomize(dir string) ([]*unstructured.Unstructured, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		// apimachinery's decoder yields int64 and float64, which unstructured needs.
		obj := map[string]any{}
		if err := utilyaml.Unmarshal(b, &obj); err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
	return out, nil
}

// Generate builds the bundle from the repository at root: config/default, and the
// samples in config/samples as the console's examples.
func Generate(root string) (map[string][]byte, error) {
	objs, err := Kustomize(filepath.Join(root, "config", "default"))
	if err != nil {
		return nil, err
	}
	samples, err := Kustomize(filepath.Join(root, "config", "samples"))
	if err != nil {
		return nil, err
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i].GetKind() < samples[j].GetKind() })
	return Build(objs, Options{Version: Version, Image: Image, ProxyImage: ProxyImage, Samples: samples})
}

// Write replaces dir's manifests/ and metadata/ with files.
func Write(dir string, files map[string][]byte) error {
	for _, sub := range []string{"manifests", "metadata"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	for path, b := range files {
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Read reads what Write wrote.
func Read(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, sub := range []string{"manifests", "metadata"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				return nil, err
			}
			files[sub+"/"+e.Name()] = b
		}
	}
	return files, nil
}

// Objects decodes a file of the bundle.
func Objects(b []byte) (map[string]any, error) {
	var obj map[string]any
	return obj, yaml.Unmarshal(b, &obj)
}

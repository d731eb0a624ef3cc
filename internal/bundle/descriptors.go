package bundle

import (
	"sort"
	"strings"
	"unicode"
)

// The console's descriptors are derived from the CRD schema rather than written by
// hand, so a field added to the API shows up in the CSV with its own documentation
// at the next `make bundle`, and a removed field cannot linger.

// maxDescriptorDepth is how deep object-valued fields are unfolded into one
// descriptor per leaf (spec.issuerRef.name, spec.certificate.privateKey.algorithm).
const maxDescriptorDepth = 3

// descriptors lists one descriptor for each field of schema (the openAPIV3Schema of
// spec or status), sorted by path.
func descriptors(schema map[string]any, status bool) []any {
	var out []any
	walkFields(schema, "", 1, func(path string, field map[string]any) {
		d := map[string]any{
			"path":        path,
			"displayName": displayName(path),
			"description": firstSentenceOf(str(field["description"])),
		}
		if x := xDescriptors(path, field, status); len(x) > 0 {
			d["x-descriptors"] = x
		}
		out = append(out, d)
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].(map[string]any)["path"].(string) < out[j].(map[string]any)["path"].(string)
	})
	return out
}

// walkFields calls fn for every leaf field under schema: scalars, lists, label
// selectors, and objects deeper than maxDescriptorDepth.
func walkFields(schema map[string]any, prefix string, depth int, fn func(string, map[string]any)) {
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		field, _ := p.(map[string]any)
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		_, hasProps := field["properties"].(map[string]any)
		if str(field["type"]) == "object" && hasProps && !isSelector(field) && depth < maxDescriptorDepth {
			walkFields(field, path, depth+1, fn)
			continue
		}
		fn(path, field)
	}
}

func isSelector(field map[string]any) bool {
	props, _ := field["properties"].(map[string]any)
	_, labels := props["matchLabels"]
	_, exprs := props["matchExpressions"]
	return labels && exprs
}

// xDescriptors picks the console widget for a field from its schema.
func xDescriptors(path string, field map[string]any, status bool) []any {
	last := path[strings.LastIndex(path, ".")+1:]
	switch {
	case status && last == "conditions":
		return []any{"urn:alm:descriptor:io.kubernetes.conditions"}
	case isSelector(field) && strings.Contains(strings.ToLower(last), "namespace"):
		return []any{"urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Namespace"}
	case isSelector(field):
		return []any{"urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Pod"}
	case status:
		return []any{"urn:alm:descriptor:text"}
	}
	switch str(field["type"]) {
	case "string":
		if enum, ok := field["enum"].([]any); ok {
			out := make([]any, 0, len(enum))
			for _, v := range enum {
				out = append(out, "urn:alm:descriptor:com.tectonic.ui:select:"+str(v))
			}
			return out
		}
		return []any{"urn:alm:descriptor:com.tectonic.ui:text"}
	case "integer":
		return []any{"urn:alm:descriptor:com.tectonic.ui:number"}
	case "boolean":
		return []any{"urn:alm:descriptor:com.tectonic.ui:booleanSwitch"}
	}
	return []any{"urn:alm:descriptor:com.tectonic.ui:advanced"}
}

// displayName turns "issuerRef.name" into "Issuer Ref Name" and "portLevelMTLS" into
// "Port Level MTLS".
func displayName(path string) string {
	var words []string
	for _, part := range strings.Split(path, ".") {
		var cur []rune
		runes := []rune(part)
		for i, r := range runes {
			boundary := i > 0 && unicode.IsUpper(r) &&
				(unicode.IsLower(runes[i-1]) || (i+1 < len(runes) && unicode.IsLower(runes[i+1])))
			if boundary {
				words = append(words, string(cur))
				cur = nil
			}
			cur = append(cur, r)
		}
		words = append(words, string(cur))
	}
	for i, w := range words {
		words[i] = strings.ToUpper(w[:1]) + w[1:]
	}
	return strings.Join(words, " ")
}

func firstSentenceOf(desc string) string {
	desc = strings.Join(strings.Fields(desc), " ")
	if i := strings.Index(desc, ". "); i > 0 {
		return desc[:i+1]
	}
	return desc
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

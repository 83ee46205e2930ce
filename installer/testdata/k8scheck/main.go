// Command k8scheck validates Kubernetes manifests (a multi-document YAML file,
// e.g. `helm template` output) against the Kubernetes API: each document is
// decoded strictly into its k8s.io/api type (unknown kinds, unknown or
// duplicate fields and wrong types are errors) and then checked against the
// API's OpenAPI-derived structural schema (client-go's apply schema), which
// also catches duplicate keys in keyed lists such as containers or env.
//
// It is a separate module so that Postern's own go.mod does not carry the
// Kubernetes client libraries; the installer tests run it with go run.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck MANIFESTS.yaml")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8scheck:", err)
		os.Exit(2)
	}
	n, err := check(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8scheck:", err)
		os.Exit(1)
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "k8scheck: no manifests")
		os.Exit(1)
	}
}

func check(raw []byte) (int, error) {
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	tc := applyconfigurations.NewTypeConverter(scheme.Scheme)
	n := 0
	for i, doc := range splitDocs(raw) {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return n, fmt.Errorf("document %d: %w", i+1, err)
		}
		name := ""
		if m, err := meta.Accessor(obj); err == nil {
			name = m.GetName()
		}
		if name == "" {
			return n, fmt.Errorf("document %d (%s): metadata.name is required", i+1, gvk.Kind)
		}
		if _, err := tc.ObjectToTyped(obj); err != nil {
			return n, fmt.Errorf("%s %s: schema: %w", gvk.Kind, name, err)
		}
		fmt.Printf("valid %s %s %s\n", gvk.GroupVersion(), gvk.Kind, name)
		n++
	}
	return n, nil
}

// splitDocs splits a YAML stream at "---" lines, dropping empty documents
// and comment-only ones (helm prints "# Source:" headers).
func splitDocs(raw []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), raw...), []byte("\n---")) {
		empty := true
		for _, line := range strings.Split(string(d), "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			out = append(out, d)
		}
	}
	return out
}

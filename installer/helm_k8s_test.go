package installer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// k8scheckDir is a separate Go module (so that this module's go.mod does not
// carry Helm and the Kubernetes client libraries) pinning Helm v4 as a tool
// and holding k8scheck, a validator against the Kubernetes API types and
// schema.
const k8scheckDir = "testdata/k8scheck"

func goIn(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestHelmChartKubernetes renders the chart built by `make packages` with the
// real Helm (v4, pinned in testdata/k8scheck/go.mod), lints it, and validates
// every rendered object against the Kubernetes API: strict decoding into the
// k8s.io/api types and the API's structural schema.
func TestHelmChartKubernetes(t *testing.T) {
	requireTools(t, "go")
	if testing.Short() {
		t.Skip("builds Helm and the Kubernetes libraries")
	}
	f := getFixture(t)
	chart := f.files("helm")[0]
	dir, err := filepath.Abs(k8scheckDir)
	if err != nil {
		t.Fatal(err)
	}
	set := []string{"--set", "token=pst1_example", "--set", "controllerURL=https://postern.example.com"}

	if out, err := goIn(t, dir, append([]string{"tool", "helm", "lint", "--strict", chart}, set...)...); err != nil || !strings.Contains(out, "0 chart(s) failed") {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
	// Without a token or an existing Secret the chart refuses to render.
	if out, err := goIn(t, dir, "tool", "helm", "template", "corp-a", chart); err == nil || !strings.Contains(out, "token") {
		t.Errorf("helm template without a token: err %v\n%s", err, out)
	}

	validate := func(name, manifests string) (string, error) {
		path := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(path, []byte(manifests), 0o644); err != nil {
			t.Fatal(err)
		}
		return goIn(t, dir, "run", ".", path)
	}
	for name, extra := range map[string][]string{
		"token":          set,
		"existingSecret": {"--set", "existingSecret=corp-a-enrollment"},
		"no-persistence": append([]string{"--set", "persistence.enabled=false"}, set...),
	} {
		out, err := goIn(t, dir, append([]string{"tool", "helm", "template", "corp-a", chart, "--namespace", "postern"}, extra...)...)
		if err != nil {
			t.Fatalf("%s: helm template: %v\n%s", name, err, out)
		}
		res, err := validate(name, out)
		if err != nil {
			t.Errorf("%s: rendered chart does not validate against the Kubernetes API: %v\n%s\n--- manifests:\n%s", name, err, res, out)
			continue
		}
		if !strings.Contains(res, "valid apps/v1 StatefulSet corp-a-postern-connector") {
			t.Errorf("%s: no StatefulSet validated:\n%s", name, res)
		}
		if hasSecret := strings.Contains(res, "valid v1 Secret "); hasSecret != (name != "existingSecret") {
			t.Errorf("%s: Secret rendered = %v:\n%s", name, hasSecret, res)
		}
		// The validator is not a rubber stamp: a misspelt field fails.
		if name == "token" {
			bad := strings.Replace(out, "serviceName:", "serviceNmae:", 1)
			if bad == out {
				t.Fatal("rendered StatefulSet has no serviceName to misspell")
			}
			if res, err := validate("bad", bad); err == nil || !strings.Contains(res, "serviceNmae") {
				t.Errorf("a misspelt field passed validation: %v\n%s", err, res)
			}
		}
	}
}

package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"gopkg.in/yaml.v3"
)

// untar extracts a tar stream into dir.
func untar(t *testing.T, r io.Reader, dir string) {
	t.Helper()
	eachTarEntry(t, r, func(h *tar.Header, body io.Reader) {
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir) {
			t.Fatalf("tar entry %q escapes", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			b, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// eachTarEntry calls fn with every entry of the tar stream r and its body,
// failing the test when the stream cannot be read.
func eachTarEntry(t *testing.T, r io.Reader, fn func(h *tar.Header, body io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(h, tr)
	}
}

// fixtureIndex unpacks the fixture's OCI tarball and opens its image index.
func fixtureIndex(t *testing.T, f *fixture) v1.ImageIndex {
	t.Helper()
	tarball, err := os.Open(f.files("oci")[0])
	if err != nil {
		t.Fatal(err)
	}
	defer tarball.Close()
	dir := t.TempDir()
	untar(t, tarball, dir)
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI image layout: %v", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestConnectorImage(t *testing.T) {
	f := getFixture(t)
	idx := fixtureIndex(t, f)
	if err := validate.Index(idx); err != nil {
		t.Fatalf("image index does not validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.Architecture != runtime.GOARCH {
		t.Fatalf("index manifests = %+v, want one linux/%s image", im.Manifests, runtime.GOARCH)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("image does not validate: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/bin/postern-connector"}) {
		t.Errorf("entrypoint %q, want the connector", cf.Config.Entrypoint)
	}
	if u := cf.Config.User; u == "" || u == "0" || u == "root" || strings.HasPrefix(u, "0:") {
		t.Errorf("image runs as %q, want a non-root user", u)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("config platform %s/%s", cf.OS, cf.Architecture)
	}
	// The filesystem holds the connector built for the image, a passwd entry
	// for its user and a state directory it owns.
	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	eachTarEntry(t, mutate.Extract(img), func(h *tar.Header, body io.Reader) {
		files[strings.Trim(h.Name, "/")] = h
		if h.Typeflag == tar.TypeReg && (h.Name == "usr/bin/postern-connector" || h.Name == "etc/passwd") {
			contents[h.Name], _ = io.ReadAll(body)
		}
	})
	want, _ := os.ReadFile(f.conn)
	if !bytes.Equal(contents["usr/bin/postern-connector"], want) {
		t.Error("image does not hold the static connector binary")
	}
	if h := files["usr/bin/postern-connector"]; h == nil || h.Mode&0o111 == 0 {
		t.Error("connector in the image is not executable")
	}
	if !strings.Contains(string(contents["etc/passwd"]), "postern:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks the connector user:\n%s", contents["etc/passwd"])
	}
	if h := files["var/lib/postern-connector"]; h == nil || h.Uid != ConnectorUID {
		t.Errorf("state directory missing or not owned by %d: %+v", ConnectorUID, h)
	}

	// A dynamically linked or foreign binary is refused with a clear message.
	if err := checkStaticELF("/bin/sh", runtime.GOARCH); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic binary: %v", err)
	}
	if _, err := ConnectorImage(filepath.Join(f.win, "posternd.exe"), runtime.GOARCH, testVersion); err == nil || !strings.Contains(err.Error(), "not a Linux ELF") {
		t.Errorf("windows binary as connector: %v", err)
	}
}

// renderChart renders the chart's templates like `helm template` does for the
// functions it uses (sprig plus include, toYaml, required).
func renderChart(t *testing.T, chart map[string][]byte, values map[string]any) (map[string]string, error) {
	t.Helper()
	var meta struct {
		Name, Version, AppVersion string `yaml:",omitempty"`
	}
	var raw map[string]any
	if err := yaml.Unmarshal(chart["Chart.yaml"], &raw); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	meta.Name, _ = raw["name"].(string)
	meta.Version, _ = raw["version"].(string)
	meta.AppVersion, _ = raw["appVersion"].(string)
	tpl := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(name string, data any) (string, error) {
		var b bytes.Buffer
		err := tpl.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["toYaml"] = func(v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	funcs["required"] = func(msg string, v any) (any, error) {
		if v == nil || v == "" {
			return nil, errString(msg)
		}
		return v, nil
	}
	tpl.Funcs(funcs)
	var names []string
	for name, b := range chart {
		if strings.HasPrefix(name, "templates/") && (strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".tpl")) {
			if _, err := tpl.New(name).Parse(string(b)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if strings.HasSuffix(name, ".yaml") {
				names = append(names, name)
			}
		}
	}
	data := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": "corp-a", "Namespace": "postern", "Service": "Helm"},
		"Chart":   map[string]any{"Name": meta.Name, "Version": meta.Version, "AppVersion": meta.AppVersion},
	}
	out := map[string]string{}
	for _, name := range names {
		var b bytes.Buffer
		if err := tpl.ExecuteTemplate(&b, name, data); err != nil {
			return nil, err
		}
		out[name] = b.String()
	}
	return out, nil
}

type errString string

func (e errString) Error() string { return string(e) }

func TestHelmChart(t *testing.T) {
	f := getFixture(t)
	raw, err := os.ReadFile(f.files("helm")[0])
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	chart := map[string][]byte{}
	eachTarEntry(t, gz, func(h *tar.Header, body io.Reader) {
		name, ok := strings.CutPrefix(h.Name, "postern-connector/")
		if !ok {
			t.Fatalf("chart entry %q outside postern-connector/", h.Name)
		}
		chart[name], _ = io.ReadAll(body)
	})
	if !strings.Contains(string(chart["Chart.yaml"]), "version: "+testVersion) || !strings.Contains(string(chart["Chart.yaml"]), `appVersion: "`+testVersion+`"`) {
		t.Errorf("Chart.yaml does not carry the build version:\n%s", chart["Chart.yaml"])
	}
	var values map[string]any
	if err := yaml.Unmarshal(chart["values.yaml"], &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}

	// Without a token or an existing Secret the chart refuses to render.
	if _, err := renderChart(t, chart, values); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("render without token: %v", err)
	}
	values["token"] = "pst1_example"
	values["controllerURL"] = "https://postern.example.com"
	out, err := renderChart(t, chart, values)
	if err != nil {
		t.Fatal(err)
	}
	var sts, secret map[string]any
	if err := yaml.Unmarshal([]byte(out["templates/statefulset.yaml"]), &sts); err != nil {
		t.Fatalf("statefulset.yaml does not parse: %v\n%s", err, out["templates/statefulset.yaml"])
	}
	if err := yaml.Unmarshal([]byte(out["templates/secret.yaml"]), &secret); err != nil {
		t.Fatalf("secret.yaml does not parse: %v", err)
	}
	if secret["kind"] != "Secret" {
		t.Fatalf("secret.yaml renders %v", secret["kind"])
	}
	sd := secret["stringData"].(map[string]any)
	if sd["token"] != "pst1_example" || sd["controller-url"] != "https://postern.example.com" {
		t.Errorf("secret data = %v", sd)
	}
	spec := sts["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	if sc := spec["securityContext"].(map[string]any); sc["runAsNonRoot"] != true || sc["runAsUser"] != ConnectorUID {
		t.Errorf("pod securityContext = %v, want non-root %d", sc, ConnectorUID)
	}
	c := spec["containers"].([]any)[0].(map[string]any)
	if !strings.HasSuffix(c["image"].(string), ":"+testVersion) {
		t.Errorf("image %v does not default to the chart's appVersion", c["image"])
	}
	if args := c["args"].([]any); len(args) < 2 || args[0] != "--token" || args[1] != "$(POSTERN_CONNECTOR_TOKEN)" {
		t.Errorf("args = %v, want --token from the Secret", args)
	}
	envs := map[string]string{}
	for _, e := range c["env"].([]any) {
		e := e.(map[string]any)
		ref := e["valueFrom"].(map[string]any)["secretKeyRef"].(map[string]any)
		envs[e["name"].(string)] = ref["name"].(string) + "/" + ref["key"].(string)
	}
	if envs["POSTERN_CONNECTOR_TOKEN"] != "corp-a-postern-connector/token" || envs["POSTERN_CONTROLLER_URL"] != "corp-a-postern-connector/controller-url" {
		t.Errorf("env from secret = %v", envs)
	}

	// With an existing Secret, the chart creates none and refers to it.
	values["token"] = ""
	values["existingSecret"] = "corp-a-enrollment"
	out, err = renderChart(t, chart, values)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out["templates/secret.yaml"]) != "" {
		t.Errorf("chart created a Secret although existingSecret is set:\n%s", out["templates/secret.yaml"])
	}
	if !strings.Contains(out["templates/statefulset.yaml"], "name: corp-a-enrollment") {
		t.Error("statefulset does not read the existing Secret")
	}
}

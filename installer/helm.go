package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"

	"postern.dev/postern/packaging"
)

const chartDir = "helm/postern-connector"

var (
	chartVersionRe    = regexp.MustCompile(`(?m)^version:.*$`)
	chartAppVersionRe = regexp.MustCompile(`(?m)^appVersion:.*$`)
)

// BuildHelmChart packages the connector's Helm chart (what `helm package`
// makes: a gzipped tar with the chart under postern-connector/), with version
// and appVersion set to the build version.
func BuildHelmChart(c *Config) (Artifact, error) {
	if err := c.validate(); err != nil {
		return Artifact{}, err
	}
	v := packageVersion(c.Version)
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return Artifact{}, fmt.Errorf("helm chart: %w", err)
	}
	tw := tar.NewWriter(gz)
	mt := sourceDate()
	err = fs.WalkDir(packaging.Files, chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(packaging.Files, p)
		if err != nil {
			return err
		}
		rel := path.Join("postern-connector", p[len(chartDir)+1:])
		if rel == "postern-connector/Chart.yaml" {
			b = chartVersionRe.ReplaceAll(b, []byte("version: "+v))
			b = chartAppVersionRe.ReplaceAll(b, []byte("appVersion: "+strconv.Quote(ImageTag(c.Version))))
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), ModTime: mt, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		return Artifact{}, fmt.Errorf("package helm chart: %w", err)
	}
	out := filepath.Join(c.OutDir, "postern-connector-"+v+".tgz")
	if err := writeFile(out, buf.Bytes(), 0o644); err != nil {
		return Artifact{}, err
	}
	c.logger().Info("built helm chart", "file", out)
	return Artifact{Kind: "helm", Path: out}, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"postern.dev/postern/internal/atomicfile"
)

// Connector image constants: the image runs as this non-root user, with the
// connector as its entrypoint and its state in ConnectorStateDir.
const (
	ConnectorUID        = 65532
	ConnectorEntrypoint = "/usr/bin/postern-connector"
	ConnectorStateDir   = "/var/lib/postern-connector"
	ConnectorImageName  = "postern/postern-connector"
)

// hostCABundle is copied into the image so that the connector can verify a
// controller that uses a public certificate (system roots).
var hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// sourceDate is the timestamp of every file and of the image (SOURCE_DATE_EPOCH
// when set, for reproducible builds).
func sourceDate() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

// ImageTag is the image tag (and the chart's appVersion) of a build version:
// the package version with "+" (not allowed in tags) replaced by "_".
func ImageTag(version string) string {
	return strings.ReplaceAll(packageVersion(version), "+", "_")
}

// checkStaticELF verifies that path is a statically linked Linux binary for
// goarch: the image has no libc.
func checkStaticELF(path, goarch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not a Linux ELF binary: %w", path, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
	if f.Machine != want {
		return fmt.Errorf("%s is built for %v, not %s", path, f.Machine, goarch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image has no libc: build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

type tarEntry struct {
	name string
	mode int64
	uid  int
	dir  bool
	data []byte
}

// connectorLayer builds the image's only layer: the connector, a passwd entry
// for its user, CA roots, and its state and temp directories.
func connectorLayer(bin []byte, caBundle []byte) (v1.Layer, error) {
	mt := sourceDate()
	entries := []tarEntry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"postern:x:" + strconv.Itoa(ConnectorUID) + ":" + strconv.Itoa(ConnectorUID) + ":Postern connector:" + ConnectorStateDir + ":/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\npostern:x:" + strconv.Itoa(ConnectorUID) + ":\n")},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/bin/", mode: 0o755, dir: true},
		{name: ConnectorEntrypoint[1:], mode: 0o755, data: bin},
		{name: "var/", mode: 0o755, dir: true},
		{name: "var/lib/", mode: 0o755, dir: true},
		{name: ConnectorStateDir[1:] + "/", mode: 0o700, uid: ConnectorUID, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	if caBundle != nil {
		entries = append(entries,
			tarEntry{name: "etc/ssl/", mode: 0o755, dir: true},
			tarEntry{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			tarEntry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: caBundle})
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: mt, Format: tar.FormatPAX}
		if e.uid != 0 {
			h.Uname, h.Gname = "postern", "postern"
		} else {
			h.Uname, h.Gname = "root", "root"
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image layer %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image layer %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.DefaultCompression))
}

// ConnectorImage builds the connector's OCI image for goarch from a statically
// linked connector binary.
func ConnectorImage(binPath, goarch, version string) (v1.Image, error) {
	if err := checkStaticELF(binPath, goarch); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, fmt.Errorf("read connector binary: %w", err)
	}
	ca, err := os.ReadFile(hostCABundle)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read CA bundle %s: %w", hostCABundle, err)
		}
		ca = nil // controllers with the deployment's own CA still work (fingerprint in the token)
	}
	layer, err := connectorLayer(bin, ca)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Author:    "postern-pkg",
			CreatedBy: "postern-pkg: postern-connector " + version,
			Created:   v1.Time{Time: sourceDate()},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("assemble image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = goarch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: sourceDate()}
	cf.Author = "Postern"
	cf.Config = v1.Config{
		User:       strconv.Itoa(ConnectorUID) + ":" + strconv.Itoa(ConnectorUID),
		Entrypoint: []string{ConnectorEntrypoint},
		Cmd:        []string{"--state", ConnectorStateDir},
		WorkingDir: ConnectorStateDir,
		Env: []string{
			"PATH=/usr/bin",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		},
		Volumes:    map[string]struct{}{ConnectorStateDir: {}},
		StopSignal: "SIGTERM",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "postern-connector",
			"org.opencontainers.image.description": "Postern connector: zero-trust access to a private network, outbound connections only",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.url":         "https://postern.dev",
			"org.opencontainers.image.licenses":    "Apache-2.0",
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	return img, nil
}

// BuildConnectorImage writes the connector image for each architecture in
// binaries (GOARCH -> static connector binary) as one OCI image-layout tarball
// (`podman load`, `docker load` (Docker 25+), `skopeo copy oci-archive:...`).
func BuildConnectorImage(c *Config, binaries map[string]string) (Artifact, error) {
	if err := c.validate(); err != nil {
		return Artifact{}, err
	}
	if len(binaries) == 0 {
		return Artifact{}, fmt.Errorf("%w: no connector binary given for the image", ErrBadConfig)
	}
	dir, err := os.MkdirTemp("", "postern-oci-")
	if err != nil {
		return Artifact{}, fmt.Errorf("create image layout directory: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return Artifact{}, fmt.Errorf("create image layout: %w", err)
	}
	ref := ConnectorImageName + ":" + ImageTag(c.Version)
	for _, arch := range sortedKeys(binaries) {
		img, err := ConnectorImage(binaries[arch], arch, c.Version)
		if err != nil {
			return Artifact{}, fmt.Errorf("connector image (%s): %w", arch, err)
		}
		if err := p.AppendImage(img,
			layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}),
			layout.WithAnnotations(map[string]string{
				"org.opencontainers.image.ref.name": ImageTag(c.Version),
				"io.containerd.image.name":          "docker.io/" + ref,
			})); err != nil {
			return Artifact{}, fmt.Errorf("write connector image (%s): %w", arch, err)
		}
	}
	out := filepath.Join(c.OutDir, "postern-connector-"+packageVersion(c.Version)+"-oci.tar")
	if err := tarDir(dir, out); err != nil {
		return Artifact{}, err
	}
	c.logger().Info("built connector image", "file", out, "ref", ref)
	return Artifact{Kind: "oci", Path: out}, nil
}

// tarDir writes the files under dir into the tar file out (paths relative to dir).
func tarDir(dir, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	return atomicfile.WriteFunc(out, 0o644, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		mt := sourceDate()
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil || rel == "." {
				return err
			}
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				return tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: mt}); err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		})
		if err != nil {
			return err
		}
		return tw.Close()
	})
}

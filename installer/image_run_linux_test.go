package installer

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
)

// TestConnectorImageRuns runs the connector OCI image that `make packages`
// builds the way Kubernetes runs the Helm
// chart's pod (runc, Debian's OCI runtime): its own entrypoint and user, a read-only root filesystem, a
// writable state volume and no capabilities. The container joins a network
// namespace where a test controller runs, enrolls with a connector token
// and must show up online in the controller's admin API.
func TestConnectorImageRuns(t *testing.T) {
	testenv.RequireRoot(t, "installs into the system")
	requireTools(t, "runc", "ip", "curl")
	f := getFixture(t)
	img := fixtureImage(t, f)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := extractImage(img, rootfs); err != nil {
		t.Fatal(err)
	}
	// The state volume, owned by the image's user as a PVC with fsGroup is.
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, ConnectorUID, ConnectorUID); err != nil {
		t.Fatal(err)
	}

	// One namespace holds the controller; the container joins it.
	ns, ctlIP := netnstest.New(t, "pstimg", ""), "198.18.7.1"
	netnstest.MustIP(t, "-n", ns, "addr", "add", ctlIP+"/32", "dev", "lo")
	nsExec := func(args ...string) (string, error) {
		out, err := exec.CommandContext(t.Context(), "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		return string(out), err
	}

	data := filepath.Join(dir, "controller")
	ctlURL := "https://" + ctlIP + ":8443"
	ctlLog := filepath.Join(dir, "controller.log")
	ctl := startLogged(t, ctlLog, "ip", "netns", "exec", ns, filepath.Join(f.bin, "postern-controller"), "serve",
		"--data", data, "--listen", ctlIP+":8443", "--public-url", ctlURL)
	ca, tokFile := filepath.Join(data, "ca.pem"), filepath.Join(data, "admin-token")
	testenv.Eventually(t, 30*time.Second, "controller /healthz", func() bool {
		_, err := nsExec("curl", "-sf", "--cacert", ca, ctlURL+"/healthz")
		return err == nil && !hasExited(ctl)
	})
	spec := filepath.Join(dir, "network.yaml")
	if err := os.WriteFile(spec, []byte("remote_networks:\n  - name: corp\n    connectors: [corp-image]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := func(args ...string) string {
		t.Helper()
		out, err := nsExec(append([]string{filepath.Join(f.bin, "postern-controller"), args[0], "--url", ctlURL, "--ca", ca, "--token-file", tokFile}, args[1:]...)...)
		if err != nil {
			t.Fatalf("postern-controller %s: %v\n%s", args[0], err, out)
		}
		return out
	}
	admin("apply", "-f", spec)
	out := strings.TrimSpace(admin("connector-token", "corp-image"))
	token := strings.TrimSpace(out[strings.LastIndex(out, "\n")+1:])

	// The runtime bundle: the image's entrypoint, command, user, env and
	// working directory, plus the token as the chart passes it.
	args := append(append(append([]string{}, cf.Config.Entrypoint...), cf.Config.Cmd...), "--token", token)
	uid, gid, err := parseUser(cf.Config.User)
	if err != nil {
		t.Fatal(err)
	}
	if uid == 0 {
		t.Fatalf("image user %q is root", cf.Config.User)
	}
	if err := writeRuntimeConfig(filepath.Join(bundle, "config.json"), runtimeSpec{
		Args: args, Env: cf.Config.Env, Cwd: cf.Config.WorkingDir, UID: uid, GID: gid,
		NetNS: "/var/run/netns/" + ns, StateDir: ConnectorStateDir, StateSource: state,
	}); err != nil {
		t.Fatal(err)
	}
	id := "postern-img-" + randHex(4)
	runLog := filepath.Join(dir, "container.log")
	// runc, the reference OCI runtime (Debian's crun 1.8 refuses hybrid
	// cgroup v1/v2 hosts such as this one).
	oci := func(args ...string) *exec.Cmd { return exec.Command("runc", args...) }
	runCmd := oci("run", "--bundle", bundle, id)
	run := startLogged(t, runLog, runCmd.Path, runCmd.Args[1:]...)
	t.Cleanup(func() {
		_ = oci("kill", id, "TERM").Run()
		waitExit(run, 10*time.Second)
		_ = oci("delete", "--force", id).Run()
	})

	// Enrolled and online, as the controller sees it.
	type connector struct {
		Name     string `json:"name"`
		Enrolled bool   `json:"enrolled"`
		Online   bool   `json:"online"`
		Version  string `json:"version"`
	}
	var conns []connector
	adminTok, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "the containerized connector online at the controller", func() bool {
		if hasExited(run) {
			b, _ := os.ReadFile(runLog)
			t.Fatalf("container exited:\n%s", b)
		}
		out, err := nsExec("curl", "-sf", "--cacert", ca, "-H", "Authorization: Bearer "+strings.TrimSpace(string(adminTok)), ctlURL+"/api/v1/connectors")
		var list struct {
			Items []connector `json:"items"`
		}
		if err != nil || json.Unmarshal([]byte(out), &list) != nil {
			return false
		}
		conns = list.Items
		return len(conns) == 1 && conns[0].Enrolled && conns[0].Online
	})
	if conns[0].Name != "corp-image" || conns[0].Version != testVersion {
		t.Errorf("connector record %+v, want corp-image at version %s", conns[0], testVersion)
	}
	// It ran as the image's user and kept its identity in the state volume.
	if entries, err := os.ReadDir(state); err != nil || len(entries) == 0 {
		t.Errorf("the connector wrote nothing to its state volume: %v", err)
	}
	ps, err := oci("ps", "--format", "json", id).Output()
	var pids []int
	if err != nil || json.Unmarshal(ps, &pids) != nil || len(pids) == 0 {
		t.Fatalf("runc ps: %v %s", err, ps)
	}
	for _, pid := range pids {
		st, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		if err != nil {
			continue
		}
		if s, ok := st.Sys().(*syscall.Stat_t); ok && s.Uid != uint32(uid) {
			t.Errorf("container process %d runs as uid %d, want the image's %d", pid, s.Uid, uid)
		}
	}
}

// fixtureImage opens the image for this machine's architecture in the
// fixture's OCI tarball.
func fixtureImage(t *testing.T, f *fixture) v1.Image {
	t.Helper()
	idx := fixtureIndex(t, f)
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		t.Fatalf("image index: %v", err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// extractImage writes the image's flattened filesystem into dir with its
// modes and owners (what a container runtime's image store does).
func extractImage(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read image filesystem: %w", err)
		}
		name := filepath.Clean("/" + h.Name)
		p := filepath.Join(dir, name)
		mode := os.FileMode(h.Mode) & os.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
			continue
		default:
			continue
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
			return err
		}
	}
}

func parseUser(u string) (uid, gid int, err error) {
	us, gs, _ := strings.Cut(u, ":")
	if _, err := fmt.Sscanf(us, "%d", &uid); err != nil {
		return 0, 0, fmt.Errorf("image user %q is not numeric", u)
	}
	gid = uid
	if gs != "" {
		if _, err := fmt.Sscanf(gs, "%d", &gid); err != nil {
			return 0, 0, fmt.Errorf("image group %q is not numeric", u)
		}
	}
	return uid, gid, nil
}

type runtimeSpec struct {
	Args, Env             []string
	Cwd                   string
	UID, GID              int
	NetNS                 string
	StateDir, StateSource string
}

// writeRuntimeConfig writes an OCI runtime config like the one Kubernetes
// gives the chart's pod: read-only root, no capabilities, no new
// privileges, the state volume and a /tmp emptyDir.
func writeRuntimeConfig(path string, s runtimeSpec) error {
	none := []string{}
	cfg := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false,
			"user":     map[string]any{"uid": s.UID, "gid": s.GID},
			"args":     s.Args, "env": s.Env, "cwd": s.Cwd,
			"capabilities":    map[string]any{"bounding": none, "effective": none, "permitted": none, "inheritable": none, "ambient": none},
			"noNewPrivileges": true,
			"rlimits":         []any{map[string]any{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}},
		},
		"root":     map[string]any{"path": "rootfs", "readonly": true},
		"hostname": "postern-connector",
		"mounts": []any{
			map[string]any{"destination": "/proc", "type": "proc", "source": "proc"},
			map[string]any{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			map[string]any{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			map[string]any{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			map[string]any{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "mode=1777"}},
			map[string]any{"destination": s.StateDir, "type": "bind", "source": s.StateSource, "options": []string{"rbind", "rw"}},
		},
		"linux": map[string]any{
			"namespaces": []any{
				map[string]any{"type": "pid"}, map[string]any{"type": "ipc"}, map[string]any{"type": "uts"},
				map[string]any{"type": "mount"}, map[string]any{"type": "network", "path": s.NetNS},
			},
			"maskedPaths":   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			"readonlyPaths": []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// startLogged starts a command with its output in logPath; the test's
// cleanup stops it (SIGTERM, then SIGKILL) by pid and shows the log on failure.
func startLogged(t *testing.T, logPath, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	procDone[cmd] = exited
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		waitExit(cmd, 10*time.Second)
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s:\n%s", filepath.Base(logPath), b)
		}
	})
	return cmd
}

var procDone = map[*exec.Cmd]chan struct{}{}

func hasExited(cmd *exec.Cmd) bool {
	select {
	case <-procDone[cmd]:
		return true
	default:
		return false
	}
}

// waitExit waits for cmd to exit, killing it after d.
func waitExit(cmd *exec.Cmd, d time.Duration) {
	done := procDone[cmd]
	select {
	case <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

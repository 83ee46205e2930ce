//go:build unix

package controllercli

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// TestServeMetricsListenerAndExport: serve --metrics answers /readyz and
// /metrics without a token, and DATA/export.yaml is picked up.
func TestServeMetricsListenerAndExport(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(filepath.Join(dir, "export.yaml"), []byte("poll: 20ms\nsinks:\n  - {name: file, type: file, path: "+out+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	var stderr testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--public-url", "https://127.0.0.1:1",
			"--metrics", "127.0.0.1:0"}, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`msg=metrics listen=(127\.0\.0\.1:\d+)`)
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics listener in the log: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "ready") {
		t.Fatalf("readyz: %d %s", code, body)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, body := get("/metrics")
		if strings.Contains(body, `postern_controller_export_last_ok_timestamp_seconds{sink="file"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the export sink from DATA/export.yaml never reported: %.2000s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// serve stops on SIGINT (its handler is installed before the metrics
	// listener starts, so the signal cannot kill the test binary).
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop on SIGINT")
	}
}

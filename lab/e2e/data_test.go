//go:build linux

package e2e

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/lab"
)

const transferSize = 100 << 20 // 100 MiB

// 100 MB down (HTTP from web.corp.internal) and up (over SSH to db) arrive
// with the same SHA-256.
func TestLargeTransferIntact(t *testing.T) {
	const seed = 42
	want := lab.BlobSHA256(seed, transferSize)
	url := "http://" + lab.WebName + "/blob?size=" + itoa(transferSize) + "&seed=" + itoa(seed)
	out := must(t, lab.NodeClient, 3*time.Minute, nil, "sh", "-c", "curl -sSf --max-time 170 '"+url+"' | sha256sum")
	if got := strings.Fields(out); len(got) == 0 || got[0] != want {
		t.Fatalf("download of %d bytes: sha256 %q, want %s", transferSize, out, want)
	}

	file := filepath.Join(t.TempDir(), "blob")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, lab.NewBlob(seed+1, transferSize)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want = lab.BlobSHA256(seed+1, transferSize)
	out = must(t, lab.NodeClient, 3*time.Minute, nil, "sh", "-c", "ssh -o ConnectTimeout=10 "+lab.DBName+" sha256sum < '"+file+"'")
	if got := strings.Fields(out); len(got) == 0 || got[0] != want {
		t.Fatalf("upload of %d bytes over ssh: sha256 %q, want %s", transferSize, out, want)
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{digits[n%10]}, b...)
		n /= 10
	}
	return string(b)
}

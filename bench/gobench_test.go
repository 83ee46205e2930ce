package bench

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestGoBenchPackagesSkipsOtherModules: a directory with its own go.mod
// (third_party/quic-go) is another module, which go test run from the
// repository root cannot name, so its benchmarks are not listed; nor are
// the harness's own, the lab's, or those under testdata.
func TestGoBenchPackagesSkipsOtherModules(t *testing.T) {
	repo := t.TempDir()
	const bench = "package x\n\nimport \"testing\"\n\nfunc BenchmarkX(b *testing.B) {}\n"
	const plain = "package x\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) {}\n"
	files := map[string]string{
		"go.mod":                           "module example.test/repo\n",
		"client/x_test.go":                 bench,
		"client/sub/x_test.go":             bench,
		"connector/x_test.go":              plain,
		"bench/x_test.go":                  bench,
		"lab/x_test.go":                    bench,
		"client/testdata/x_test.go":        bench,
		"third_party/quic-go/go.mod":       "module github.com/quic-go/quic-go\n",
		"third_party/quic-go/x_test.go":    bench,
		"third_party/quic-go/in/x_test.go": bench,
	}
	for name, body := range files {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := GoBenchPackages(repo)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"./client", "./client/sub"}; !slices.Equal(got, want) {
		t.Fatalf("packages %v, want %v", got, want)
	}
}

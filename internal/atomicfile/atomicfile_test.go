package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestWriteCreatesAndReplaces: a new file gets data and mode; a second
// Write replaces it; no temporary file stays behind.
func TestWriteCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("content %q, %v", b, err)
	}
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("mode %v, %v", fi.Mode(), err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the file: %v", len(ents), ents)
	}
}

// TestWriteFailureNamesPathAndChangesNothing: a directory that does not
// exist is an error naming the path; a target that is a directory is not
// replaced and leaves no temporary file.
func TestWriteFailureNamesPathAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no", "such", "file")
	if err := Write(missing, []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("write into a missing directory: %v", err)
	}
	target := filepath.Join(dir, "adir")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("x"), 0o600); err == nil {
		t.Fatal("replacing a non-empty directory succeeded")
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		t.Fatalf("the directory was replaced: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("a temporary file stayed behind: %v", ents)
	}
}

// TestConcurrentWritersLeaveAWholeFile: readers racing many writers only
// ever see one complete version.
func TestConcurrentWritersLeaveAWholeFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows refuses to rename over a file a reader has open")
	}
	p := filepath.Join(t.TempDir(), "f")
	versions := [][]byte{bytes.Repeat([]byte("a"), 64<<10), bytes.Repeat([]byte("b"), 64<<10)}
	if err := Write(p, versions[0], 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if err := Write(p, versions[i%2], 0o600); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return
		default:
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, versions[0]) && !bytes.Equal(b, versions[1]) {
			t.Fatalf("read a partial file of %d bytes", len(b))
		}
	}
}

// TestWriteFuncFailureKeepsTheOldFile: when the writer fails half-way the
// file keeps its old contents, no temporary file stays behind, and the
// error names the path and wraps the writer's.
func TestWriteFuncFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "layer.tar")
	if err := WriteFunc(p, 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, "old")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("walk failed")
	err := WriteFunc(p, 0o644, func(w io.Writer) error {
		_, _ = io.WriteString(w, "half of the new")
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v, want it to wrap the writer's and name %s", err, p)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "old" {
		t.Fatalf("content %q, %v; want the old file untouched", b, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the file: %v", len(ents), ents)
	}
}

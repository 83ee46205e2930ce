package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCopyDeploymentCopiesTheIdentity: every deployment file is copied
// byte for byte with mode 0600; the OIDC flow key may be absent (no single
// sign-on); a missing required file is an error naming it.
func TestCopyDeploymentCopiesTheIdentity(t *testing.T) {
	from, to := t.TempDir(), filepath.Join(t.TempDir(), "b")
	for _, f := range DeploymentFiles {
		if optionalDeploymentFiles[f] {
			continue
		}
		if err := os.WriteFile(filepath.Join(from, f), []byte("content of "+f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := CopyDeployment(from, to); err != nil {
		t.Fatal(err)
	}
	for _, f := range DeploymentFiles {
		b, err := os.ReadFile(filepath.Join(to, f))
		if optionalDeploymentFiles[f] {
			if err == nil {
				t.Errorf("%s appeared in the copy without existing in the source", f)
			}
			continue
		}
		if err != nil || string(b) != "content of "+f {
			t.Errorf("%s: %q, %v", f, b, err)
		}
		if st, _ := os.Stat(filepath.Join(to, f)); st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if err := os.Remove(filepath.Join(from, "turn-secret")); err != nil {
		t.Fatal(err)
	}
	err := CopyDeployment(from, filepath.Join(t.TempDir(), "c"))
	if err == nil || !strings.Contains(err.Error(), "turn-secret") {
		t.Fatalf("copy without turn-secret: %v, want an error naming it", err)
	}
}

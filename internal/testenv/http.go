package testenv

import (
	"io"
	"net/http"
	"testing"
)

// Get fetches url with http.Get and returns the response (its body already
// read and closed) and the body as text. A request that fails, or a body
// that cannot be read, fails the test.
func Get(t testing.TB, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, string(b)
}

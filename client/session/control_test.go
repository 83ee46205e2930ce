package session

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"postern.dev/postern/controlapi"
)

// TestPolicyStreamErrorLineEndsSession: the controller ends a client's
// policy stream with an {"error": ...} line only when the session is over;
// that is ErrSessionEnded, not a policy to apply nor an outage to ride out.
func TestPolicyStreamErrorLineEndsSession(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(controlapi.ClientPolicy{Revision: 1})
		_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "device revoked"})
	}))
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	cc, err := newControlClient(srv.URL, ca, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.close()
	cc.setToken("tok")
	var revs []int64
	err = cc.policyStream(context.Background(), 0, func() {}, func(p *controlapi.ClientPolicy) { revs = append(revs, p.Revision) })
	if !errors.Is(err, ErrSessionEnded) || len(revs) != 1 || revs[0] != 1 {
		t.Fatalf("err %v after snapshots %v, want ErrSessionEnded after rev 1", err, revs)
	}
	select {
	case <-cc.sessionEnded():
		t.Fatal("a stream's error line marked a 401")
	default:
	}
	// A 401 on the stream is the session's end too, and ends every call.
	cc.setToken("other")
	err = cc.policyStream(context.Background(), 1, func() {}, func(*controlapi.ClientPolicy) {})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("401 stream: %v", err)
	}
	select {
	case <-cc.sessionEnded():
	default:
		t.Fatal("401 not recorded as the session's end")
	}
}

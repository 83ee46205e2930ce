package traversal

import (
	"context"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/sigwire"
)

// TestConnectorTricklesLateReflexiveAddress: a server-reflexive address the
// connector learns after an offer reaches the client of that running session
// as a candidate. (Without it, a client whose offer came before the
// connector's first STUN answer never permitted the connector's NAT address
// on its TURN allocation, and the first dial timed out: the cause of
// TestLabMigratesToDirectWhenUDPUnblocked's failures.)
func TestConnectorTricklesLateReflexiveAddress(t *testing.T) {
	ctx, w, a, _ := runningWorld(t)
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	c, _, err := dialSignal(sctx, w.relayInfo, &w.devCert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: w.connID, Token: w.token(w.connID)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Write(&sigwire.Message{Type: sigwire.TypeOffer, Ufrag: "cufrag", Pwd: "cpwdcpwdcpwdcpwdcpwd"}); err != nil {
		t.Fatal(err)
	}
	read := func() *sigwire.Message {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := c.Read()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return m
	}
	if m := read(); m.Type != sigwire.TypeAnswer {
		t.Fatalf("got %+v, want an answer", m)
	}
	const late = "192.0.2.9:1234"
	a.setReflexive(controlapi.RelayInfo{ID: "relay-2", Name: "relay-2"}, late)
	for {
		m := read()
		if m.Type != sigwire.TypeCandidate {
			continue
		}
		for _, cand := range m.Candidates {
			if cand.Addr == late && cand.Type == sigwire.CandSrflx {
				return
			}
		}
	}
}

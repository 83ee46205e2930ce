package traversal

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

func TestDirectPathOnLoopback(t *testing.T) {
	noLeaks(t)
	ctx, w, _, _ := runningWorld(t)
	d := newDialer(t, w.dialerConfig(nil))
	d.releaseAfter = 0
	d.cfg.Relays = func() []controlapi.RelayInfo { return []controlapi.RelayInfo{w.relayInfo} }
	conn, _ := w.dial(t, ctx, d, w.connectorInfo(), PathDirect, TransportUDP)
	echo(t, ctx, conn, "hello direct")
	// The TURN allocation made while the path was found is released once
	// the connection has been direct for a while; the connection carries on.
	released := func() bool {
		d.mu.Lock()
		st := d.conns[conn]
		d.mu.Unlock()
		l := st.current()
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.released
	}
	testenv.Eventually(t, 15*time.Second, "the unused TURN allocation to be released", func() bool {
		return released() && w.relay.Stats()["postern_relay_allocations"] == 0
	})
	echo(t, ctx, conn, "still direct")
	conn.CloseWithError(0, "")
}

func TestRelayedPathOverUDP(t *testing.T) {
	noLeaks(t)
	ctx, w, _, _ := runningWorld(t)
	cfg := w.dialerConfig([]controlapi.RelayInfo{w.relayInfo})
	cfg.NoDirect = true
	d := newDialer(t, cfg)
	conn, _ := w.dial(t, ctx, d, w.connectorInfo(), PathRelay, TransportUDP)
	echo(t, ctx, conn, "hello relay")
	if cur, ok := d.Path(conn); !ok || cur.Path != PathRelay || cur.RTT <= 0 {
		t.Fatalf("Path = %+v %v, want relay with an RTT", cur, ok)
	}
	if got := w.relay.Stats()["postern_relay_bytes_total"]; got <= 0 {
		t.Fatalf("relay counted %v bytes", got)
	}
	conn.CloseWithError(0, "")
}

func TestRelayedPathOverTLSWhenUDPFails(t *testing.T) {
	noLeaks(t)
	ctx, w, _, _ := runningWorld(t)
	// The client sees a relay whose UDP port does not answer: TURN must
	// fall back to TLS on the TLS listener.
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	ri := w.relayInfo
	ri.UDPAddr = dead.LocalAddr().String()
	cfg := w.dialerConfig([]controlapi.RelayInfo{ri})
	cfg.NoDirect = true
	start := time.Now()
	conn, _ := w.dial(t, ctx, newDialer(t, cfg), w.connectorInfo(), PathRelay, TransportTLS)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("TLS fallback took %v", el)
	}
	echo(t, ctx, conn, "hello tls relay")
	conn.CloseWithError(0, "")
}

func TestDialWithoutRelayUsesAdvertisedAddrs(t *testing.T) {
	noLeaks(t)
	ctx, w, _, tr := runningWorld(t)
	d := newDialer(t, w.dialerConfig(nil))
	ci := w.connectorInfo()
	if _, _, err := d.Dial(ctx, ci, w.clientTLS(), nil); !errors.Is(err, ErrNoPath) {
		t.Fatalf("no relay, no address: %v", err)
	}
	ci.Addrs = []string{tr.Conn.LocalAddr().String()}
	conn, _ := w.dial(t, ctx, d, ci, PathDirect, "")
	echo(t, ctx, conn, "hello advertised")
	conn.CloseWithError(0, "")
}

func TestRankRelaysPrefersAnsweringRelay(t *testing.T) {
	noLeaks(t)
	w := newWorld(t)
	w.startRelay()
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	slow := w.relayInfo
	slow.ID, slow.Name, slow.UDPAddr = "relay-dead", "relay-dead", dead.LocalAddr().String()
	cfg := w.dialerConfig(nil)
	// Long enough for the live relay to answer on a loaded machine; the
	// dead one must not hold the ranking up for all of it: once the live
	// relay answered, the others have rankGrace.
	cfg.RankTimeout = 20 * time.Second
	d := newDialer(t, cfg)
	start := time.Now()
	got := d.rankRelays(context.Background(), []controlapi.RelayInfo{slow, w.relayInfo})
	if got[0].ID != w.relayInfo.ID || got[1].ID != "relay-dead" {
		t.Fatalf("ranked %s, %s", got[0].ID, got[1].ID)
	}
	if took := time.Since(start); took > cfg.RankTimeout/2 {
		t.Fatalf("ranking waited %v for the dead relay (RankTimeout %v)", took, cfg.RankTimeout)
	}
}

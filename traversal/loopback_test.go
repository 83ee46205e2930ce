package traversal

import (
	"context"
	"errors"
	"net"
	"postern.dev/postern/controlapi"
	"testing"
	"time"
)

func TestDirectPathOnLoopback(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t)
	w.startRelay()
	w.startConnector(ctx)
	d, err := NewDialer(w.dialerConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.releaseAfter = 0
	d.cfg.Relays = func() []controlapi.RelayInfo { return []controlapi.RelayInfo{w.relayInfo} }
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	conn, p, err := d.Dial(dctx, w.connectorInfo(), w.clientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != PathDirect || p.Transport != TransportUDP {
		t.Fatalf("path = %+v, want direct/udp", p)
	}
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
	deadline := time.Now().Add(15 * time.Second)
	for !released() || w.relay.Stats()["postern_relay_allocations"] > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unused TURN allocation was not released")
		}
		time.Sleep(100 * time.Millisecond)
	}
	echo(t, ctx, conn, "still direct")
	conn.CloseWithError(0, "")
}

func TestRelayedPathOverUDP(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t)
	w.startRelay()
	w.startConnector(ctx)
	cfg := w.dialerConfig([]controlapi.RelayInfo{w.relayInfo})
	cfg.NoDirect = true
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	conn, p, err := d.Dial(dctx, w.connectorInfo(), w.clientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != PathRelay || p.Transport != TransportUDP {
		t.Fatalf("path = %+v, want relay/udp", p)
	}
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t)
	w.startRelay()
	w.startConnector(ctx)
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
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	start := time.Now()
	conn, p, err := d.Dial(dctx, w.connectorInfo(), w.clientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != PathRelay || p.Transport != TransportTLS {
		t.Fatalf("path = %+v, want relay/tls", p)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("TLS fallback took %v", el)
	}
	echo(t, ctx, conn, "hello tls relay")
	conn.CloseWithError(0, "")
}

func TestDialWithoutRelayUsesAdvertisedAddrs(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t)
	w.startRelay()
	_, tr := w.startConnector(ctx)
	d, err := NewDialer(w.dialerConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ci := w.connectorInfo()
	if _, _, err := d.Dial(ctx, ci, w.clientTLS(), nil); !errors.Is(err, ErrNoPath) {
		t.Fatalf("no relay, no address: %v", err)
	}
	ci.Addrs = []string{tr.Conn.LocalAddr().String()}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	conn, p, err := d.Dial(dctx, ci, w.clientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != PathDirect {
		t.Fatalf("path = %+v", p)
	}
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
	d, err := NewDialer(w.dialerConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := d.rankRelays(context.Background(), []controlapi.RelayInfo{slow, w.relayInfo})
	if got[0].ID != w.relayInfo.ID || got[1].ID != "relay-dead" {
		t.Fatalf("ranked %s, %s", got[0].ID, got[1].ID)
	}
}

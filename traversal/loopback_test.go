package traversal

import (
	"context"
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

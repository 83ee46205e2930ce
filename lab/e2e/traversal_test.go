//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/lab"
)

// NAT traversal under full NAT (issue 6): the paths the client takes, and
// what happens to running flows when the network changes under them.

func skipIfReachable(t *testing.T) {
	t.Helper()
	if getLab(t).ReachableConnectors() {
		t.Skip("reachable-connectors variant: the connectors' QUIC port is open, there is nothing to traverse")
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// relayCaptureHasNoPlaintext runs while the client is relayed (both NATs
// symmetric): every frame on the relay host is captured while a plaintext
// HTTP body full of a marker goes through a flow. A plaintext control
// datagram sent to the relay proves that the capture sees traffic; the
// marker itself must never appear: the relay carries only QUIC ciphertext.
func relayCaptureHasNoPlaintext(t *testing.T) {
	l := getLab(t)
	marker := []byte("POSTERN-FLOW-MARKER-" + randomHex(t, 8))
	control := []byte("POSTERN-CONTROL-" + randomHex(t, 8))
	body := bytes.Repeat(append(append([]byte(nil), marker...), '\n'), (256<<10)/(len(marker)+1))
	file := filepath.Join(t.TempDir(), "marker-body")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	capt, err := l.StartCapture(lab.NodeRelay, marker, control)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = capt.Stop()
		}
	}()
	must(t, lab.NodeClient, 10*time.Second, nil, "bash", "-c", "printf %s '"+string(control)+"' > /dev/udp/"+lab.RelayIP+"/9")
	out := must(t, lab.NodeClient, 30*time.Second, nil, "curl", "-sSf", "--max-time", "25", "--data-binary", "@"+file,
		"http://"+lab.WebName+"/sha256")
	if got := strings.Fields(out); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("POST /sha256 through the relay answered %q, want %x", got, sum)
	}
	// The marker also goes in the request line and headers.
	must(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://"+lab.WebName+"/?q="+string(marker), "-H", "X-Marker: "+string(marker))...)
	res, err := capt.Stop()
	stopped = true
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	t.Logf("relay capture: %d frames, %d bytes; control datagram seen %d times, flow marker %d times", res.Packets, res.Bytes, res.Hits[1], res.Hits[0])
	if res.Hits[1] == 0 {
		t.Fatal("the capture missed the plaintext control datagram: it proves nothing")
	}
	if res.Bytes < int64(len(body)) {
		t.Fatalf("the relay carried only %d bytes while %d went through the flow: the flow did not use the relay", res.Bytes, len(body))
	}
	if res.Hits[0] != 0 {
		t.Fatalf("the relay's traffic contains the plaintext marker in %d frames", res.Hits[0])
	}
}

// Start with UDP blocked at home (relayed over TLS) and an SSH session open,
// then unblock: the connection moves to a direct path within 30 s and the
// SSH session survives the move.
func TestUnblockUDPMigratesToDirect(t *testing.T) {
	skipIfReachable(t)
	l := workingLab(t)
	ctx := context.Background()
	s := relayedSession(t, l.BlockUDP, "block UDP", "tls") // unblocking again at cleanup is harmless
	s.roundTrip("relayed", 10*time.Second)
	if err := l.BlockUDP(ctx, lab.RouterHome, false); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	st := waitPaths(t, 30*time.Second, "direct", "udp")
	took := time.Since(at)
	for _, c := range st.Connectors {
		if c.Connected {
			t.Logf("connector %s: %s/%s %s, rtt %.1f ms", c.Name, c.Path, c.Transport, c.RemoteAddr, c.RTTMillis)
		}
	}
	t.Logf("moved to a direct path %s after UDP was unblocked", took.Round(time.Millisecond))
	s.roundTrip("direct", 10*time.Second)
}

// Restart the relay during a relayed session (UDP blocked at home keeps the
// session on the relay over TLS): the session's flows resume.
func TestRelayRestartDuringRelayedSession(t *testing.T) {
	skipIfReachable(t)
	l := workingLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := relayedSession(t, l.BlockUDP, "block UDP", "tls")
	s.roundTrip("before restart", 10*time.Second)
	if err := l.Restart(ctx, lab.ProgRelay); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	s.roundTrip("after restart", 30*time.Second)
	t.Logf("the session answered %s after the relay restarted", time.Since(restarted).Round(time.Millisecond))
	assertAccessWorks(t, 20*time.Second)
	st := waitPaths(t, 20*time.Second, "relay", "tls")
	for _, c := range st.Connectors {
		if c.Connected {
			t.Logf("connector %s: %s/%s %s", c.Name, c.Path, c.Transport, c.RemoteAddr)
		}
	}
}

// The client changes its address (new LAN address, new public address)
// during a download: the transfer completes with the right SHA-256.
func TestRoamingDuringTransferIntact(t *testing.T) {
	l := workingLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// 16 Mbit/s at home: the 16 MiB download takes about 8 s, long enough
	// to roam in the middle of it.
	if err := l.RateLimit(ctx, lab.RouterHome, 16000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.RateLimit(context.Background(), lab.RouterHome, 0); err != nil {
			t.Errorf("remove rate limit: %v", err)
		}
	})
	const size, seed = 16 << 20, 77
	url := "http://" + lab.WebName + "/blob?size=" + itoa(size) + "&seed=" + itoa(seed)
	cmd, err := l.Command(ctx, lab.NodeClient, "sh", "-c", "curl -sSf --max-time 100 '"+url+"' | sha256sum")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("the download ended before the client roamed (after %s): %v\n%s", time.Since(start), err, out.String())
	case <-time.After(2 * time.Second):
	}
	newIP, err := l.ChangeClientAddress(ctx, lab.NodeClient)
	if err != nil {
		t.Fatal(err)
	}
	roamed := time.Since(start)
	if err := <-done; err != nil {
		t.Fatalf("download across the address change failed after %s: %v\n%s", time.Since(start), err, out.String())
	}
	if got := strings.Fields(out.String()); len(got) == 0 || got[0] != lab.BlobSHA256(seed, size) {
		t.Fatalf("download across the address change: sha256 %q, want %s", out.String(), lab.BlobSHA256(seed, size))
	}
	t.Logf("roamed to %s %s into the download; %d MiB arrived intact after %s", newIP, roamed.Round(time.Millisecond), size>>20, time.Since(start).Round(time.Millisecond))
}

// The client roams while relayed (a symmetric NAT at home: the connector's
// punches never reach the client, so the relay carries the connection over
// UDP). The TURN allocation belongs to the old address; the client notices
// its new server-reflexive address, allocates again and moves the connection
// onto the new allocation: the SSH session survives.
func TestRoamingWhileRelayedKeepsSession(t *testing.T) {
	skipIfReachable(t)
	l := workingLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := relayedSession(t, l.SymmetricNAT, "symmetric NAT", "udp")
	s.roundTrip("relayed", 10*time.Second)
	newIP, err := l.ChangeClientAddress(ctx, lab.NodeClient)
	if err != nil {
		t.Fatal(err)
	}
	roamed := time.Now()
	s.roundTrip("roamed", 30*time.Second)
	t.Logf("roamed to %s while relayed; the session answered %s later", newIP, time.Since(roamed).Round(time.Millisecond))
}

// Time from `postern up` to the first byte from a resource, for each path:
// direct (cone NATs), relayed over UDP (both NATs symmetric) and relayed over
// TLS (UDP blocked at home). Each run takes the tunnel down and up again, so
// the first flow dials a fresh connection (signaling, candidate gathering,
// checks, QUIC handshake, token). The p50 is logged; a path must also be the
// one status reports, and every run must finish within 10 s.
//
// It runs on bob's laptop (same home network): the relay limits TURN
// endpoints per principal and counts an endpoint until it has been idle for
// 11 minutes, and alice's daemon has opened dozens of allocations in the
// tests before (see the report on relay quota accounting).
func TestPathSetupTimes(t *testing.T) {
	skipIfReachable(t)
	l := getLab(t)
	const node = lab.NodeClientBob
	webWorks := func(within time.Duration) {
		t.Helper()
		testenv.Poll(t, within, "curl http://"+lab.WebName+"/ from bob's laptop", func() error {
			if r := run(t, node, 15*time.Second, nil, curlArgs("http://"+lab.WebName+"/", "-o", "/dev/null")...); r.err != nil {
				return &cmdFailure{r}
			}
			return nil
		})
	}
	webWorks(20 * time.Second)
	cases := []struct {
		path, transport string
		fault           func(on bool) error
	}{
		{"direct", "udp", nil},
		{"relay", "udp", func(on bool) error {
			for _, r := range []string{lab.RouterHome, lab.RouterCorp} {
				if err := l.SymmetricNAT(context.Background(), r, on); err != nil {
					return err
				}
			}
			return nil
		}},
		{"relay", "tls", func(on bool) error { return l.BlockUDP(context.Background(), lab.RouterHome, on) }},
	}
	const runs = 3
	for _, tc := range cases {
		t.Run(tc.path+"-"+tc.transport, func(t *testing.T) {
			if tc.fault != nil {
				if err := tc.fault(true); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := tc.fault(false); err != nil {
						t.Errorf("undo fault: %v", err)
					}
				}()
				// The fault resets the connectors' links (conntrack
				// flushed); measure once the network has settled.
				webWorks(30 * time.Second)
			}
			var times []time.Duration
			for i := 0; i < runs; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
				if out, err := l.Postern(ctx, node, "down"); err != nil {
					cancel()
					t.Fatalf("postern down: %v\n%s", err, out)
				}
				start := time.Now()
				if out, err := l.Postern(ctx, node, "up"); err != nil {
					cancel()
					t.Fatalf("postern up: %v\n%s", err, out)
				}
				r := run(t, node, 15*time.Second, nil, curlArgs("http://"+lab.WebName+"/", "-o", "/dev/null")...)
				took := time.Since(start)
				cancel()
				if r.err != nil {
					t.Fatalf("run %d: first request after up: %v\n%s", i, r.err, r.out)
				}
				sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
				st, err := l.Status(sctx, node)
				scancel()
				if err != nil {
					t.Fatal(err)
				}
				ok := false
				for _, c := range st.Connectors {
					if c.Connected && c.Path == tc.path && c.Transport == tc.transport {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("run %d: no connector on %s/%s: %+v", i, tc.path, tc.transport, st.Connectors)
				}
				if took > 10*time.Second {
					t.Errorf("run %d: first byte %s after up", i, took.Round(time.Millisecond))
				}
				times = append(times, took)
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			t.Logf("postern up -> first byte over %s/%s (bob): p50 %s (runs: %v)", tc.path, tc.transport, times[len(times)/2].Round(time.Millisecond), times)
		})
	}
}

// The office network blocks UDP (only TCP leaves): the connectors reach the
// relay over TLS, allocate there and serve clients on their allocations, so
// new flows work again through the relay. It runs last (Z, and in the last
// file): connections made through a connector's own allocation stay there
// after the office's UDP returns (no migration to a new remote address yet),
// so the cleanup restarts the connectors for a clean lab.
func TestZConnectorNetworkBlocksUDP(t *testing.T) {
	l := workingLab(t)
	if err := l.BlockUDP(context.Background(), lab.RouterCorp, true); err != nil {
		t.Fatal(err)
	}
	blocked := time.Now()
	t.Cleanup(func() {
		if err := l.BlockUDP(context.Background(), lab.RouterCorp, false); err != nil {
			t.Errorf("unblock UDP at the office: %v", err)
		}
		for _, p := range []string{lab.ProgConnectorA, lab.ProgConnectorB} {
			if err := l.Restart(context.Background(), p); err != nil {
				t.Errorf("restart %s: %v", p, err)
			}
		}
		assertAccessWorks(t, 60*time.Second)
	})
	assertAccessWorks(t, 60*time.Second)
	t.Logf("new ssh succeeded %s after the office blocked UDP", time.Since(blocked).Round(time.Millisecond))
	st := waitPaths(t, 30*time.Second, "relay", "")
	for _, c := range st.Connectors {
		if c.Connected {
			t.Logf("connector %s: %s over %s via %s", c.Name, c.Path, c.Transport, c.RemoteAddr)
		}
	}
}

// relayedSession switches a fault on at the home router for the rest of the
// test (see routerFault), waits until access works again through the relay
// over transport, and opens an SSH session there.
func relayedSession(t *testing.T, fault func(context.Context, string, bool) error, what, transport string) *session {
	t.Helper()
	routerFault(t, fault, lab.RouterHome, what)
	assertAccessWorks(t, 30*time.Second)
	waitPaths(t, 20*time.Second, "relay", transport)
	return startSession(t)
}

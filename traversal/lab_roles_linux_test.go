package traversal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/atomicfile"
)

// TestLabHelper is the body of the helper processes the lab tests start
// inside namespaces; it is skipped in a normal run.
func TestLabHelper(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("lab helper process only")
	}
	b, err := os.ReadFile(os.Getenv(helperCfgEnv))
	if err != nil {
		t.Fatal(err)
	}
	var c labConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	w := worldFrom(t, c)
	ctx := context.Background()
	switch role {
	case "relay":
		tlsPort := labRelayTLS
		if c.RelayTLSPort != "" {
			tlsPort = c.RelayTLSPort
		}
		w.startRelayOn(labRelayIP, labRelayUDP, tlsPort, false)
		touch(t, c.Dir, "relay.ready")
		select {}
	case "relay2":
		w.startRelayOn(labRelay2IP, labRelayUDP, labRelayTLS, false)
		touch(t, c.Dir, "relay2.ready")
		select {}
	case "netcheck":
		labNetcheck(t, w, c)
	case "connector":
		a, _ := w.startConnectorOn(ctx, &net.UDPAddr{IP: net.IPv4zero, Port: labConnPort})
		// Ready once reachable from outside: a server-reflexive address
		// (UDP works) or an allocation over TLS (UDP blocked).
		deadline := time.Now().Add(20 * time.Second)
		for len(a.ReflexiveAddrs()) == 0 && len(a.RelayedAddrs()) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		touch(t, c.Dir, "connector.ready")
		select {}
	case "client":
		labClient(t, w, c)
	case "capture":
		labCapture(t, c)
	default:
		t.Fatalf("unknown role %q", role)
	}
}

func touch(t *testing.T, dir, name string) {
	if err := os.WriteFile(filepath.Join(dir, name), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
}

type clientResult struct {
	Path      PathInfo
	Final     PathInfo
	Err       string
	Echoes    int
	Switched  time.Duration
	Connected time.Duration
	FirstByte time.Duration // from the start of the dial to the first echo
	MovedAt   time.Time     // "udpdeath": when the path was first seen relayed
	MaxStall  time.Duration // "udpdeath": the longest echo round trip
}

func writeResult(t *testing.T, dir, name string, v any) {
	b, _ := json.Marshal(v)
	if err := atomicfile.Write(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func labClient(t *testing.T, w *world, c labConfig) {
	cfg := w.dialerConfig([]controlapi.RelayInfo{c.Relay})
	cfg.ListenAddr = "0.0.0.0:0"
	cfg.TLSFallbackDelay = time.Second
	if c.BadCreds {
		cfg.NoDirect = true
		cfg.TURNCredentials = func(context.Context) (controlapi.TURNCredentials, error) {
			cr := w.creds()
			cr.Password = controlapi.TURNPassword("not-the-secret", cr.Username)
			return cr, nil
		}
	}
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var res clientResult
	start := time.Now()
	dialTimeout := 20 * time.Second
	if c.DialTimeout > 0 {
		dialTimeout = c.DialTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	conn, p, err := d.Dial(ctx, w.connectorInfo(), w.clientTLS(), nil)
	cancel()
	res.Connected = time.Since(start)
	if err != nil {
		res.Err = err.Error()
		writeResult(t, c.Dir, "client.result", res)
		return
	}
	res.Path, res.Final = p, p
	ctx = context.Background()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readTimeout := 5 * time.Second
	// One long-lived stream: each round writes a line with the marker and
	// reads its echo back.
	round := func() error {
		msg := []byte(c.Marker + " " + strings.Repeat("x", 1000) + "\n")
		if _, err := s.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		_ = s.SetReadDeadline(time.Now().Add(readTimeout))
		if _, err := ioReadFull(s, got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return errors.New("echo mismatch")
		}
		if res.Echoes == 0 {
			res.FirstByte = time.Since(start)
		}
		res.Echoes++
		if res.Echoes == 3 {
			touch(t, c.Dir, "client.echoing") // the session is carrying data
		}
		return nil
	}
	if c.Mode == "roam" {
		res.Err = roamTransfer(t, c, s)
		res.Final, _ = d.Path(conn)
		writeResult(t, c.Dir, "client.result", res)
		conn.CloseWithError(0, "")
		return
	}
	n := 50
	if c.Mode == "migrate" || c.Mode == "restart" || c.Mode == "udpdeath" {
		writeResult(t, c.Dir, "client.connected", res)
		n = 0
	}
	for i := 0; i < n; i++ {
		if err := round(); err != nil {
			res.Err = err.Error()
			break
		}
	}
	if c.Mode == "direct" && res.Err == "" {
		// A relayed pair can validate first when the first direct checks
		// meet a NAT the peer has not primed yet (the dial waits only
		// directGrace for a direct pair); the session then moves to the
		// direct path on its own.
		deadline := time.Now().Add(45 * time.Second) // as "migrate" allows
		for res.Final.Path != PathDirect && time.Now().Before(deadline) {
			if err := round(); err != nil {
				res.Err = err.Error()
				break
			}
			res.Final, _ = d.Path(conn)
			if res.Final.Path == PathDirect {
				res.Switched = time.Since(start)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if c.Mode == "migrate" {
		deadline := time.Now().Add(45 * time.Second)
		after := 0
		for time.Now().Before(deadline) && after < 5 {
			if err := round(); err != nil {
				res.Err = err.Error()
				break
			}
			cur, _ := d.Path(conn)
			res.Final = cur
			if cur.Path == PathDirect {
				if res.Switched == 0 {
					res.Switched = time.Since(start)
				}
				after++
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if c.Mode == "udpdeath" {
		// An SSH-like session: one stream echoing small lines while UDP
		// dies under the direct path; it may stall, it must not break,
		// and it must end up relayed.
		readTimeout = 30 * time.Second
		deadline := time.Now().Add(60 * time.Second)
		after := 0
		for time.Now().Before(deadline) && after < 5 {
			t0 := time.Now()
			if err := round(); err != nil {
				res.Err = err.Error()
				break
			}
			res.MaxStall = max(res.MaxStall, time.Since(t0))
			res.Final, _ = d.Path(conn)
			if res.Final.Path == PathRelay {
				if res.MovedAt.IsZero() {
					res.MovedAt = time.Now()
				}
				after++
			}
			time.Sleep(200 * time.Millisecond)
		}
		if after < 5 && res.Err == "" {
			res.Err = "the connection never moved onto a relay"
		}
	}
	if c.Mode == "restart" {
		// Echo on the same stream across the relay's restart; stalls are
		// allowed, a broken stream is not.
		readTimeout = 40 * time.Second
		deadline := time.Now().Add(90 * time.Second)
		after := 0
		for time.Now().Before(deadline) && after < 5 {
			if err := round(); err != nil {
				res.Err = err.Error()
				break
			}
			res.Final, _ = d.Path(conn)
			if _, err := os.Stat(filepath.Join(c.Dir, "relay.restarted")); err == nil {
				after++
			}
			time.Sleep(200 * time.Millisecond)
		}
		if after < 5 && res.Err == "" {
			res.Err = "relay restart not seen"
		}
	}
	writeResult(t, c.Dir, "client.result", res)
	conn.CloseWithError(0, "")
}

// roamTransfer sends 8 MiB through the echo stream, paced so that it spans
// the client's address change, and compares SHA-256 of what went and came.
func roamTransfer(t *testing.T, c labConfig, s interface {
	Write([]byte) (int, error)
	Read([]byte) (int, error)
	Close() error
	SetReadDeadline(time.Time) error
}) string {
	const total, chunk = 8 << 20, 64 << 10
	sent, got := sha256.New(), sha256.New()
	done := make(chan error, 1)
	go func() {
		_ = s.SetReadDeadline(time.Now().Add(90 * time.Second))
		_, err := io.Copy(got, s)
		done <- err
	}()
	writeResult(t, c.Dir, "client.connected", clientResult{})
	buf := make([]byte, chunk)
	seed := sha256.Sum256([]byte(c.Marker))
	for off := 0; off < total; off += chunk {
		for i := range buf {
			buf[i] = seed[(off/chunk+i)%len(seed)] ^ byte(i>>5)
		}
		sent.Write(buf)
		if _, err := s.Write(buf); err != nil {
			return "write: " + err.Error()
		}
		if off == 1<<20 {
			touch(t, c.Dir, "client.midway") // 1 MiB sent: the transfer is running
		}
		time.Sleep(40 * time.Millisecond)
	}
	s.Close()
	if err := <-done; err != nil {
		return "read: " + err.Error()
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return fmt.Sprintf("SHA-256 mismatch: sent %x, echoed %x", sent.Sum(nil), got.Sum(nil))
	}
	return ""
}

func ioReadFull(s interface{ Read([]byte) (int, error) }, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := s.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

type captureResult struct {
	Packets      int
	Bytes        int
	Found        bool
	FoundControl bool // the plaintext control datagram was seen: the capture works
}

// labCapture reads every frame on the relay host's interfaces (AF_PACKET)
// until told to stop, and records whether the marker appeared.
func labCapture(t *testing.T, c labConfig) {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	tv := syscall.Timeval{Usec: 200000}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	touch(t, c.Dir, "capture.ready")
	var res captureResult
	buf := make([]byte, 65536)
	marker := []byte(c.Marker)
	control := []byte(controlMarker(c.Marker))
	for {
		if _, err := os.Stat(filepath.Join(c.Dir, "capture.stop")); err == nil {
			break
		}
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		res.Packets++
		res.Bytes += n
		if bytes.Contains(buf[:n], marker) {
			res.Found = true
		}
		if bytes.Contains(buf[:n], control) {
			res.FoundControl = true
		}
	}
	writeResult(t, c.Dir, "capture.result", res)
}

// controlMarker is a plaintext string distinct from the marker.
func controlMarker(marker string) string { return "control:" + strings.ToLower(marker) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

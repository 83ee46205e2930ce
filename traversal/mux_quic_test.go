package traversal

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/testenv"
)

// udpRxQueue is the receive queue of the local IPv4 UDP socket on port, from
// /proc/net/udp (hex "tx_queue:rx_queue"), or -1 when it is not listed.
func udpRxQueue(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		t.Skipf("no /proc/net/udp: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	want := fmt.Sprintf(":%04X", port)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && strings.HasSuffix(fs[1], want) {
			var tx, rx int
			if _, err := fmt.Sscanf(fs[4], "%x:%x", &tx, &rx); err == nil {
				return rx
			}
		}
	}
	return -1
}

// TestMuxQueuesAnswersBeforeItsReaderRuns: quic-go drops non-QUIC packets
// until the transport's first ReadNonQUICPacket call. A STUN answer that
// arrives after newMux but before run's goroutine reads must still reach
// the transaction (it was dropped, and the relay ranking waited its whole
// timeout for a live relay).
func TestMuxQueuesAnswersBeforeItsReaderRuns(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	m := newMux(tr, "udp", testLogger())
	req, err := stunBinding()
	if err != nil {
		t.Fatal(err)
	}
	wait, err := m.send(req, server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	// The server answers at once; quic-go's socket reader takes the answer
	// off the socket (queued or dropped) before the mux's reader starts.
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := server.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := &stun.Message{Raw: buf[:n]}
	if err := got.Decode(); err != nil {
		t.Fatal(err)
	}
	ua := from.(*net.UDPAddr)
	resp, err := stun.Build(stun.NewTransactionIDSetter(got.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.WriteTo(resp.Raw, from); err != nil {
		t.Fatal(err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	testenv.Eventually(t, 5*time.Second, "quic-go took the answer off the socket", func() bool {
		return udpRxQueue(t, port) == 0
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = m.run(ctx) }()
	defer func() { cancel(); <-done }()
	r, err := wait(ctx, 2*time.Second)
	if err != nil {
		t.Fatalf("the answer that came before the reader ran was lost: %v", err)
	}
	if a, err := mappedAddr(r.msg); err != nil || a.Port != port {
		t.Fatalf("mapped %v (%v), want port %d", a, err, port)
	}
}

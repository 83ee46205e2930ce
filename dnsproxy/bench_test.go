package dnsproxy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// The benchmarks measure a server on one core the way a DNS load tester
// does: the load comes from a separate process (this test binary re-run as
// TestLoadgen, itself on GOMAXPROCS=1), keeping a window of queries in
// flight over real UDP with batched sendmmsg/recvmmsg, so the client does
// not eat the server's core. Run them with -cpu 1 (make bench-dns).
//
// Reported: queries/s (answers received per second of wall time) and the
// p50/p99 latency of each query under that load.

const (
	loadgenEnv    = "POSTERN_DNS_LOADGEN"
	loadgenWindow = 128
)

type loadResult struct {
	Received int     `json:"received"`
	Lost     int     `json:"lost"`
	Seconds  float64 `json:"seconds"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
}

// benchQueries sends b.N A queries for name to addr from the load process.
func benchQueries(b *testing.B, addr, name string) {
	b.StopTimer()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadgen$")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", fmt.Sprintf("%s=%s|%s|%d", loadgenEnv, addr, name, b.N))
	b.StartTimer()
	out, err := cmd.Output()
	b.StopTimer()
	if err != nil {
		b.Fatalf("load generator: %v\n%s", err, out)
	}
	var res loadResult
	for _, line := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(line, "LOADGEN "); ok {
			if err := json.Unmarshal([]byte(j), &res); err != nil {
				b.Fatal(err)
			}
		}
	}
	if res.Seconds == 0 {
		b.Fatalf("load generator printed no result:\n%s", out)
	}
	b.ReportMetric(float64(res.Received)/res.Seconds, "queries/s")
	b.ReportMetric(res.P50us, "p50-µs")
	b.ReportMetric(res.P99us, "p99-µs")
	b.ReportMetric(float64(res.Lost), "lost")
}

// TestLoadgen is the load generator process (not a test on its own).
func TestLoadgen(t *testing.T) {
	spec := os.Getenv(loadgenEnv)
	if spec == "" {
		t.Skip("load generator process for the benchmarks")
	}
	parts := strings.Split(spec, "|")
	n, _ := strconv.Atoi(parts[2])
	res, err := loadgen(parts[0], parts[1], n)
	if err != nil {
		fmt.Println("LOADGEN-ERROR", err)
		os.Exit(2)
	}
	j, _ := json.Marshal(res)
	fmt.Println("LOADGEN " + string(j))
	os.Exit(0)
}

func loadgen(addr, name string, n int) (loadResult, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return loadResult{}, err
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return loadResult{}, err
	}
	defer conn.Close()
	conn.SetReadBuffer(4 << 20)
	conn.SetWriteBuffer(4 << 20)
	pc := ipv4.NewPacketConn(conn)
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	query, err := m.Pack()
	if err != nil {
		return loadResult{}, err
	}
	var sentAt [65536]atomic.Int64
	tokens := make(chan struct{}, loadgenWindow)
	for i := 0; i < loadgenWindow; i++ {
		tokens <- struct{}{}
	}
	start := time.Now()
	var stopSend atomic.Bool
	go func() {
		const batch = 32
		msgs := make([]ipv4.Message, batch)
		bufs := make([][]byte, batch)
		for i := range msgs {
			bufs[i] = slices.Clone(query)
			msgs[i].Buffers = [][]byte{bufs[i]}
		}
		for seq := 0; seq < n && !stopSend.Load(); {
			<-tokens
			k := 1
			for k < batch && seq+k < n {
				select {
				case <-tokens:
					k++
					continue
				default:
				}
				break
			}
			now := time.Since(start).Nanoseconds()
			for i := 0; i < k; i++ {
				id := uint16(seq + i)
				binary.BigEndian.PutUint16(bufs[i], id)
				sentAt[id].Store(now)
			}
			for off := 0; off < k; {
				w, err := pc.WriteBatch(msgs[off:k], 0)
				if err != nil {
					return
				}
				off += w
			}
			seq += k
		}
	}()
	lats := make([]int64, 0, n)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	lost := 0
	for len(lats)+lost < n {
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		k, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Whatever is in flight is lost; give its tokens back.
				inFlight := loadgenWindow - len(tokens)
				lost += inFlight
				for i := 0; i < inFlight; i++ {
					tokens <- struct{}{}
				}
				continue
			}
			stopSend.Store(true)
			return loadResult{}, err
		}
		now := time.Since(start).Nanoseconds()
		for i := 0; i < k; i++ {
			if msgs[i].N < 12 {
				continue
			}
			id := binary.BigEndian.Uint16(msgs[i].Buffers[0])
			lats = append(lats, now-sentAt[id].Load())
			tokens <- struct{}{}
		}
	}
	elapsed := time.Since(start)
	stopSend.Store(true)
	if len(lats) == 0 {
		return loadResult{Lost: lost, Seconds: elapsed.Seconds()}, nil
	}
	slices.Sort(lats)
	return loadResult{
		Received: len(lats), Lost: lost, Seconds: elapsed.Seconds(),
		P50us: float64(lats[len(lats)/2]) / 1e3, P99us: float64(lats[len(lats)*99/100]) / 1e3,
	}, nil
}

// startBenchServer serves h on 127.0.0.1 over UDP for the benchmark.
func startBenchServer(b *testing.B, h dns.Handler) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	s := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go s.ActivateAndServe()
	<-started
	b.Cleanup(func() { s.Shutdown() })
	return pc.LocalAddr().String()
}

func staticHandler() dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { staticUpstream("udp", w, r) })
}

func benchProxy(b *testing.B, cfg Config) string {
	p := newTestProxy(b, cfg, corpResources...)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	return serveForBench(b, p, pc)
}

// BenchmarkResourceQuery: queries for a resource name answered from the
// synthetic range, next to a bare miekg/dns server with a static answer.
func BenchmarkResourceQuery(b *testing.B) {
	b.Run("bare-miekg-static", func(b *testing.B) {
		benchQueries(b, startBenchServer(b, staticHandler()), "db.corp.internal")
	})
	b.Run("postern-resource", func(b *testing.B) {
		benchQueries(b, benchProxy(b, Config{Logger: quiet}), "db.corp.internal")
	})
}

// BenchmarkForwardedQuery: queries for a public name forwarded to the
// upstream, next to querying that upstream directly.
func BenchmarkForwardedQuery(b *testing.B) {
	up := startBenchServer(b, staticHandler())
	b.Run("direct-upstream", func(b *testing.B) {
		benchQueries(b, up, "www.example.test")
	})
	b.Run("postern-forwarded", func(b *testing.B) {
		benchQueries(b, benchProxy(b, Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(up)}, Logger: quiet}), "www.example.test")
	})
}

// BenchmarkHandlerResource: the handler chain alone (no sockets) for a
// resource name, to see the proxy's own cost per query.
func BenchmarkHandlerResource(b *testing.B) {
	p := newTestProxy(b, Config{Logger: quiet}, corpResources...)
	m := new(dns.Msg)
	m.SetQuestion("db.corp.internal.", dns.TypeA)
	h := p.Handler()
	b.ReportAllocs()
	for b.Loop() {
		w := &recorder{udp: true}
		h.ServeDNS(b.Context(), w, m)
	}
}

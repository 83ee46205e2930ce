package client

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
)

// BenchmarkTUN measures, in network namespaces with a real TUN daemon, real
// connector and controller: single-flow throughput (next to direct TCP
// between the same namespaces), 64-byte request/response latency idle and
// under a parallel bulk transfer, new flows per second, and the daemon's
// memory per idle flow. Run as root: go test -run XXX -bench TUN ./client/
func BenchmarkTUN(b *testing.B) {
	l := newNetLab(b)
	l.build()
	l.startServer()
	// Private servers: a bulk source and an echo server behind the connector,
	// and a bulk source in the connector's namespace for direct TCP.
	var src, echo, direct, sink, directSink, directEcho net.Listener
	netnstest.In(b, l.srv, func() {
		src, _ = net.Listen("tcp", "198.19.0.10:7000")
		echo, _ = net.Listen("tcp", "198.19.0.10:7002")
		sink, _ = net.Listen("tcp", "198.19.0.10:7004")
	})
	netnstest.In(b, l.conn, func() {
		direct, _ = net.Listen("tcp", "198.18.0.2:7001")
		directSink, _ = net.Listen("tcp", "198.18.0.2:7005")
		directEcho, _ = net.Listen("tcp", "198.18.0.2:7006")
	})
	if src == nil || echo == nil || direct == nil || sink == nil || directSink == nil || directEcho == nil {
		b.Fatal("listen in namespaces failed")
	}
	testenv.Serve(b, src, sourceConn)
	testenv.Serve(b, direct, sourceConn)
	testenv.Serve(b, sink, sinkConn)
	testenv.Serve(b, directSink, sinkConn)
	testenv.Serve(b, echo, echoConn)
	testenv.Serve(b, directEcho, echoConn)
	// New-flow cells open tens of thousands of connections: let the client
	// namespace reuse its TIME-WAIT ports (a per-namespace setting).
	run(b, "ip", "netns", "exec", l.cli, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
	l.startControlPlane()
	sock := l.startDaemon("tun", "--tun", "pst0")
	testenv.Eventually(b, 30*time.Second, "tunnel ready", func() bool {
		c, err := dialIn(b, l.cli, "198.19.0.10:7002")
		if err != nil {
			return false
		}
		c.Close()
		return true
	})

	// The tunnel's processes: their CPU time per GB moved is reported.
	tunnelPids := []int{l.daemons[0].Process.Pid, l.procPid(b, "postern-connector")}
	b.Run("throughput/tunnel", func(b *testing.B) { benchDownload(b, l, "198.19.0.10:7000", tunnelPids) })
	b.Run("throughput/direct-tcp", func(b *testing.B) { benchDownload(b, l, "198.18.0.2:7001", nil) })
	b.Run("upload/tunnel", func(b *testing.B) { benchUpload(b, l, "198.19.0.10:7004", tunnelPids) })
	b.Run("upload/direct-tcp", func(b *testing.B) { benchUpload(b, l, "198.18.0.2:7005", nil) })
	if dir := os.Getenv("POSTERN_BENCH_PROFILE"); dir != "" {
		b.Run("profile", func(b *testing.B) { profileTunnel(b, l, sock, dir) })
	}
	b.Run("latency/idle", func(b *testing.B) { benchLatency(b, l, "", "198.19.0.10:7002") })
	b.Run("latency/under-bulk", func(b *testing.B) { benchLatency(b, l, "198.19.0.10:7000", "198.19.0.10:7002") })
	// The same tunnel echo while the bulk transfer bypasses the tunnel: the
	// machine is as busy, but no QUIC queue is shared with the bulk flow.
	b.Run("latency/under-outside-bulk", func(b *testing.B) { benchLatency(b, l, "198.18.0.2:7001", "198.19.0.10:7002") })
	b.Run("latency/idle-direct-tcp", func(b *testing.B) { benchLatency(b, l, "", "198.18.0.2:7006") })
	b.Run("latency/under-bulk-direct-tcp", func(b *testing.B) { benchLatency(b, l, "198.18.0.2:7001", "198.18.0.2:7006") })
	b.Run("new-flows", func(b *testing.B) { benchNewFlows(b, l, "198.19.0.10:7002") })
	b.Run("new-flows/direct-tcp", func(b *testing.B) { benchNewFlows(b, l, "198.18.0.2:7006") })
	b.Run("idle-flows-10k", func(b *testing.B) {
		// One round is the measurement (it takes longer than -benchtime).
		// The echo server runs in its own process: this one holds the
		// application sockets, the open-file limit allows one side only.
		os.Setenv(echoHelperEnv, "198.19.0.10:7003")
		l.start(l.srv, "echo-helper", nil, os.Args[0], "-test.run=^$")
		os.Unsetenv(echoHelperEnv)
		testenv.Eventually(b, 10*time.Second, "echo helper", func() bool {
			c, err := dialIn(b, l.cli, "198.19.0.10:7003")
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		pid := l.daemons[0].Process.Pid
		time.Sleep(time.Second)
		before := rssKiB(b, pid)
		const n = 10000
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < n; i++ {
			c, err := dialIn(b, l.cli, "198.19.0.10:7003")
			if err != nil {
				b.Fatalf("flow %d: %v", i, err)
			}
			conns = append(conns, c)
		}
		// Every flow carries one round trip so it is fully established.
		for _, c := range conns {
			_, _ = c.Write([]byte{1})
			var one [1]byte
			if _, err := io.ReadFull(c, one[:]); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		after := rssKiB(b, pid)
		if f := os.Getenv("POSTERN_BENCH_HEAP"); f != "" {
			out, err := exec.Command("curl", "-sS", "-o", f, "--unix-socket", sock, "http://posternd/v1/debug/pprof/heap?debug=1").CombinedOutput()
			b.Logf("heap profile to %s: %v %s", f, err, out)
		}
		b.ReportMetric(float64(after-before)/n, "KiB/flow")
		b.Logf("posternd RSS %d KiB -> %d KiB with %d idle flows", before, after, n)
	})
}

// benchNewFlows opens a connection, makes one 1-byte round trip and closes
// it, one after the other.
func benchNewFlows(b *testing.B, l *netLab, addr string) {
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := dialIn(b, l.cli, addr)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = c.Write([]byte{1})
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// dialIn opens a TCP connection from inside namespace ns.
func dialIn(t testing.TB, ns, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	netnstest.In(t, ns, func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) })
	return c, err
}

func benchDownload(b *testing.B, l *netLab, addr string, pids []int) {
	c, err := dialIn(b, l.cli, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// Warm up past slow start.
	if _, err := io.CopyN(io.Discard, c, 16<<20); err != nil {
		b.Fatal(err)
	}
	const chunk = 1 << 20
	buf := make([]byte, 256<<10)
	b.SetBytes(chunk)
	cpu0 := cpuSeconds(b, pids)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.CopyBuffer(io.Discard, io.LimitReader(c, chunk), buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, chunk, cpuSeconds(b, pids)-cpu0, pids != nil)
}

// benchUpload sends to a sink: the application -> connector direction.
func benchUpload(b *testing.B, l *netLab, addr string, pids []int) {
	c, err := dialIn(b, l.cli, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for i := 0; i < 16; i++ { // warm up past slow start
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(chunk)
	cpu0 := cpuSeconds(b, pids)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, chunk, cpuSeconds(b, pids)-cpu0, pids != nil)
}

func reportRate(b *testing.B, chunk int, cpu float64, withCPU bool) {
	bytes := float64(b.N) * float64(chunk)
	b.ReportMetric(bytes*8/b.Elapsed().Seconds()/1e9, "Gbit/s")
	if withCPU {
		b.ReportMetric(cpu/(bytes/1e9), "cpu-s/GB")
	}
}

// procPid is the pid of the lab process running prog.
func (l *netLab) procPid(b *testing.B, prog string) int {
	for _, c := range l.procs {
		for _, a := range c.Args {
			if strings.HasSuffix(a, "/"+prog) {
				return c.Process.Pid
			}
		}
	}
	b.Fatalf("no %s process in the lab", prog)
	return 0
}

// cpuSeconds is the user+system CPU time of the processes (USER_HZ = 100).
func cpuSeconds(b *testing.B, pids []int) float64 {
	var total float64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) / 100
	}
	return total
}

// profileTunnel records 10-second CPU profiles of posternd and the connector
// during a download and then during an upload, into dir.
func profileTunnel(b *testing.B, l *netLab, sock, dir string) {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, addr string
		up         bool
	}{{"down", "198.19.0.10:7000", false}, {"up", "198.19.0.10:7004", true}} {
		c, err := dialIn(b, l.cli, tc.addr)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			if tc.up {
				_, _ = io.Copy(c, zeroReader{})
			} else {
				_, _ = io.Copy(io.Discard, c)
			}
		}()
		done := make(chan error, 2)
		go func() {
			done <- exec.Command("curl", "-sS", "-o", dir+"/posternd-"+tc.name+".pprof", "--unix-socket", sock, "http://posternd/v1/debug/pprof/profile?seconds=10").Run()
		}()
		go func() {
			_, err := l.exec(l.conn, "", "curl", "-sS", "-o", dir+"/connector-"+tc.name+".pprof", "http://198.18.0.2:9464/debug/pprof/profile?seconds=10")
			done <- err
		}()
		for i := 0; i < 2; i++ {
			if err := <-done; err != nil {
				b.Errorf("profile %s: %v", tc.name, err)
			}
		}
		c.Close()
	}
	b.Logf("profiles in %s", dir)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// benchLatency measures 64-byte request/response round trips to echoAddr,
// with a parallel download from bulkAddr running when it is not empty.
func benchLatency(b *testing.B, l *netLab, bulkAddr, echoAddr string) {
	if bulkAddr != "" {
		bc, err := dialIn(b, l.cli, bulkAddr)
		if err != nil {
			b.Fatal(err)
		}
		defer bc.Close()
		go func() { _, _ = io.Copy(io.Discard, bc) }()
		time.Sleep(500 * time.Millisecond)
	}
	c, err := dialIn(b, l.cli, echoAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p50, p99 := benchRoundTrips(b, c)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
}

func rssKiB(b *testing.B, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// echoHelperEnv makes the test binary an echo server (see TestMain).
const echoHelperEnv = "POSTERN_TEST_ECHO_HELPER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(echoHelperEnv); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go echoConn(c)
		}
	}
	os.Exit(m.Run())
}

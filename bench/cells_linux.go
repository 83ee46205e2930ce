package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// iperfResult is the part of iperf3's JSON the harness reads.
type iperfResult struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Bytes         float64 `json:"bytes"`
		} `json:"sum_received"`
		Streams []struct {
			Receiver struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"receiver"`
		} `json:"streams"`
	} `json:"end"`
	Error string `json:"error"`
}

func (i iperfResult) gbps() float64 { return i.End.SumReceived.BitsPerSecond / 1e9 }

func (i iperfResult) jain() float64 {
	var xs []float64
	for _, s := range i.End.Streams {
		xs = append(xs, s.Receiver.BitsPerSecond)
	}
	return Jain(xs)
}

func (r *runner) iperfArgs(t *tunnel, secs float64, extra ...string) []string {
	return append([]string{"iperf3", "-c", t.iperfAddr(), "-p", fmt.Sprint(t.iperfPort), "-J",
		"-t", fmt.Sprint(int(math.Ceil(secs))), "--connect-timeout", "3000"}, extra...)
}

// iperf runs one iperf3 client test from the tunnel's client host.
func (r *runner) iperf(ctx context.Context, t *tunnel, secs float64, extra ...string) (iperfResult, error) {
	var res iperfResult
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs*float64(time.Second))+20*time.Second)
	defer cancel()
	var out string
	var err error
	for attempt := 0; ; attempt++ {
		if err := r.waitIperfListening(cctx); err != nil {
			return res, err
		}
		out, err = nsRun(cctx, t.ns, nil, r.iperfArgs(t, secs, extra...)...)
		// The single-test iperf3 server may still be finishing the previous
		// test; wait for it rather than lose the cell.
		if attempt < 4 && strings.Contains(out, "server is busy") {
			time.Sleep(time.Second)
			continue
		}
		break
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil && err == nil {
		err = fmt.Errorf("%w: parse JSON: %v", errIperf, jerr)
	}
	if res.Error != "" {
		err = fmt.Errorf("%w: %s", errIperf, res.Error)
	}
	if err == nil && res.End.SumReceived.Bytes == 0 {
		err = fmt.Errorf("%w: nothing received", errIperf)
	}
	if err != nil {
		// A failed test can leave the single-test iperf3 server busy for a
		// moment; give it time before the next tunnel's cell.
		time.Sleep(500 * time.Millisecond)
		return res, err
	}
	return res, nil
}

// waitIperfListening waits until the iperf3 server listens. The
// single-test server closes its listening socket after each test and opens
// a new one, and a client that comes in between is refused (seen when a
// cell of another tunnel had just ended).
func (r *runner) waitIperfListening(ctx context.Context) error {
	srv := r.topo.ns(NodeServer)
	filter := fmt.Sprintf("sport = :%d", IperfPort)
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := nsRun(ctx, srv, nil, "ss", "-Hltn", filter)
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w: the server does not listen on port %d (ss: %v)", errIperf, IperfPort, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpuCell sends at a fixed rate and counts the CPU time the tunnel's own
// processes (and their children) spent, per GB received.
func (r *runner) cpuCell(ctx context.Context, t *tunnel) (map[string]float64, error) {
	pids := t.pids()
	c0 := totalCPU(pids)
	res, err := r.iperf(ctx, t, r.opts.ShortCell.Seconds(), "-b", r.opts.FixedRate)
	c1 := totalCPU(pids)
	if err != nil {
		return nil, err
	}
	gb := res.End.SumReceived.Bytes / 1e9
	return map[string]float64{MCPUPerGB: (c1 - c0).Seconds() / gb}, nil
}

// rrBulkCell measures request/response latency while one iperf3 flow runs
// through the same tunnel.
func (r *runner) rrBulkCell(ctx context.Context, t *tunnel) (map[string]float64, error) {
	p50, p99, bulk, err := r.rrBeside(ctx, t, t)
	return map[string]float64{MRRBulkP50: p50, MRRBulkP99: p99, MRRBulkTput: bulk}, err
}

// rrBulkOutsideCell is rrBulkCell with the bulk upload outside the tunnel
// (plain TCP from the same client host to the same server host): what the
// echo through the tunnel costs when it shares only the machine, not the
// tunnel, with the bulk flow.
func (r *runner) rrBulkOutsideCell(ctx context.Context, t *tunnel) (map[string]float64, error) {
	p50, p99, _, err := r.rrBeside(ctx, t, r.directTunnel())
	return map[string]float64{MRRBulkOutP50: p50, MRRBulkOutP99: p99}, err
}

// rrBeside runs the 64-byte echo through t while an iperf3 upload runs
// through bulkVia, and returns the echo's p50 and p99 in µs and the
// upload's rate in Gbit/s.
func (r *runner) rrBeside(ctx context.Context, t, bulkVia *tunnel) (p50, p99, bulkGbps float64, err error) {
	bulkSecs := r.opts.Probe.Seconds() + 2
	if err := r.waitIperfListening(ctx); err != nil {
		return 0, 0, 0, err
	}
	args := append([]string{"ip", "netns", "exec", bulkVia.ns}, r.iperfArgs(bulkVia, bulkSecs)...)
	bulk := exec.CommandContext(ctx, args[0], args[1:]...)
	bulk.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	bulk.Stdout = &out
	if err := bulk.Start(); err != nil {
		return 0, 0, 0, fmt.Errorf("start bulk iperf3: %w", err)
	}
	time.Sleep(700 * time.Millisecond)
	var res RRResult
	err = r.agentJSON(ctx, t.ns, &res, "rr", "--addr", t.echoAddr(), "--duration", r.opts.Probe.String())
	werr := bulk.Wait()
	if err != nil {
		return 0, 0, 0, err
	}
	var ir iperfResult
	if jerr := json.Unmarshal([]byte(out.String()), &ir); werr != nil || jerr != nil || ir.Error != "" || ir.gbps() == 0 {
		return 0, 0, 0, fmt.Errorf("bulk iperf3 (%s) beside the request/response did not run: %v %v %s", bulkVia.label, werr, jerr, ir.Error)
	}
	return res.P50us, res.P99us, ir.gbps(), nil
}

// memCell opens n idle flows through the tunnel and returns the growth of
// the tunnel processes' RSS from before (their RSS before the first memory
// cell) per flow, in KiB.
func (r *runner) memCell(ctx context.Context, t *tunnel, n int, before int64) (float64, error) {
	if len(t.memPids()) == 0 {
		return math.NaN(), fmt.Errorf("no tunnel process")
	}
	openFor := 25 * time.Second
	if r.opts.Quick {
		openFor = 20 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, openFor+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", append([]string{"netns", "exec", t.ns}, r.agentArgs("hold", "--addr", t.echoAddr(),
		"--n", fmt.Sprint(n), "--workers", "64", "--timeout", openFor.String())...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, fmt.Errorf("hold agent: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("hold agent: %w", err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("hold agent: %w", err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
		// Let the tunnel tear the flows down before the next cell.
		if left := r.echoLeft(5 * time.Second); left > 0 {
			r.cellErr(t, fmt.Sprintf("%d idle flows: %d connections to the server still open 5 s after the client closed them", n, left))
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("hold agent: %w: %s", err, stderr.String())
	}
	var hr HoldResult
	if err := json.Unmarshal([]byte(line), &hr); err != nil {
		return 0, fmt.Errorf("hold agent: %w: %q", err, line)
	}
	time.Sleep(500 * time.Millisecond)
	after := totalRSS(t.memPids())
	if hr.Opened < n {
		msg := fmt.Sprintf("only %d of %d flows opened in %.0f s (%d failed; first error: %s)", hr.Opened, n, hr.Seconds, hr.Errors, hr.FirstError)
		if hr.Opened < n*9/10 {
			return 0, errors.New(msg)
		}
		// Nearly all: report per opened flow, and say what failed.
		r.cellErr(t, fmt.Sprintf("%d idle flows: %s", n, msg))
	}
	return float64(after-before) / float64(hr.Opened) / 1024, nil
}

// dnsCell measures the daemon's DNS proxy for a resource name and a
// forwarded name (Postern), or the upstream server queried directly (the
// reference row).
func (r *runner) dnsCell(ctx context.Context, t *tunnel) (map[string]float64, error) {
	dur := (r.opts.Probe / 2).String()
	out := map[string]float64{}
	if t.key == TunDirect {
		var res DNSResult
		err := r.agentJSON(ctx, t.ns, &res, "dns", "--addr", InfraIP+":53", "--name", "www.example.test", "--workers", "8", "--duration", dur)
		out[MDNSUpstream] = res.PerSec
		return out, err
	}
	if r.pst == nil || r.pst.dns == "" {
		return nil, fmt.Errorf("no DNS proxy address")
	}
	var res, fwd DNSResult
	if err := r.agentJSON(ctx, t.ns, &res, "dns", "--addr", r.pst.dns, "--name", ResourceName, "--workers", "8", "--duration", dur); err != nil {
		return nil, err
	}
	out[MDNSResource], out[MDNSResP99] = res.PerSec, res.P99us
	if err := r.agentJSON(ctx, t.ns, &fwd, "dns", "--addr", r.pst.dns, "--name", "www.example.test", "--workers", "8", "--duration", dur); err != nil {
		return out, err
	}
	out[MDNSForwarded] = fwd.PerSec
	return out, nil
}

// setupCell measures connection setup one connection at a time (latency:
// connect() and first echoed byte), then the rate with 64 workers.
func (r *runner) setupCell(ctx context.Context, t *tunnel) (map[string]float64, error) {
	half := (r.opts.Probe / 2).String()
	var one, many SetupResult
	if err := r.agentJSON(ctx, t.ns, &one, "setup", "--addr", t.echoAddr(), "--workers", "1", "--duration", half); err != nil {
		return nil, err
	}
	err := r.agentJSON(ctx, t.ns, &many, "setup", "--addr", t.echoAddr(), "--workers", "64", "--duration", half)
	for _, res := range []SetupResult{one, many} {
		if res.Errors > 0 {
			r.cellErr(t, fmt.Sprintf("setup: %d of %d connections failed (first: %s)", res.Errors, res.Errors+res.Conns, res.FirstError))
		}
	}
	out := map[string]float64{MSetupP50: one.ConnectP50, MSetupFirst: one.FirstByte}
	if err != nil {
		return out, err
	}
	if left := r.echoLeft(3 * time.Second); left > 0 {
		r.cellErr(t, fmt.Sprintf("setup: %d connections to the server still open 3 s after every client closed its end (flows not closed through the tunnel)", left))
		out[MLeftOpen] = float64(left)
	}
	out[MSetupRate] = many.PerSec
	out[MSetupP50x64] = many.ConnectP50
	return out, nil
}

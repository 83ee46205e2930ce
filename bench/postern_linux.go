package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/lab"
	"postern.dev/postern/localapi"
)

const controllerURL = "https://" + InfraIP

// postern is the deployed control plane and connector.
type postern struct {
	dataDir                 string
	cp                      *lab.ControlPlane
	password                string
	controller, relay, conn *proc
	daemons                 map[string]*proc // node -> posternd
	sockets                 map[string]string
	dns                     string // the daemon's DNS proxy, ip:port
}

func (r *runner) bin(name string) string { return filepath.Join(r.opts.BinDir, name) }

// deployPostern brings up controller, relay and connector exactly as an
// administrator would (serve, apply, relay-token, connector-token).
func (r *runner) deployPostern(ctx context.Context) error {
	for _, p := range []string{"postern-controller", "postern-relay", "postern-connector", "posternd", "postern"} {
		if _, err := os.Stat(r.bin(p)); err != nil {
			return fmt.Errorf("%w: %s (run make build)", ErrMissingTool, r.bin(p))
		}
	}
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	r.pst = &postern{dataDir: filepath.Join(r.work, "controller"), password: hex.EncodeToString(pw),
		daemons: map[string]*proc{}, sockets: map[string]string{}}
	r.pst.cp = &lab.ControlPlane{Bin: r.bin, NS: r.topo.ns(NodeInfra), URL: controllerURL,
		CAFile: filepath.Join(r.pst.dataDir, "ca.pem"), AdminTokenFile: filepath.Join(r.pst.dataDir, "admin-token"), Dir: r.work}
	if err := os.MkdirAll(r.pst.dataDir, 0o700); err != nil {
		return fmt.Errorf("controller data dir: %w", err)
	}
	infra := r.topo.ns(NodeInfra)
	ctl, err := r.spawn("postern-controller", infra, nil, r.bin("postern-controller"), "serve",
		"--data", r.pst.dataDir, "--listen", InfraIP+":443", "--public-url", controllerURL)
	if err != nil {
		return err
	}
	r.pst.controller = ctl
	if err := r.pst.cp.Wait(ctx, ctl.Proc, 30*time.Second); err != nil {
		return err
	}
	spec := lab.NetworkSpec{
		RemoteNetworks: []lab.RemoteNetworkSpec{{Name: BenchNetwork, Connectors: []string{ConnectorName}}},
		Groups:         []lab.GroupSpec{{Name: "bench", Users: []string{BenchUser}}},
		Users:          []lab.UserSpec{{Email: BenchUser, Password: r.pst.password}},
		Resources: []lab.ResourceSpec{{Name: "srv", Address: ResourceName, Network: BenchNetwork,
			Ports: []string{fmt.Sprintf("tcp/%d", IperfPort), fmt.Sprintf("tcp/%d", EchoPort)}, Groups: []string{"bench"}}},
	}
	if err := r.pst.cp.Apply(ctx, r.pst.cp.URL, spec); err != nil {
		return err
	}
	relayTok, err := r.pst.cp.EnrollToken(ctx, "relay-token", "bench-relay")
	if err != nil {
		return err
	}
	if r.pst.relay, err = r.spawn("postern-relay", infra, nil, r.bin("postern-relay"), "--token", relayTok,
		"--listen-udp", InfraIP+":3478", "--listen-tls", InfraIP+":4443", "--public-ip", InfraIP,
		"--state", filepath.Join(r.work, "relay")); err != nil {
		return err
	}
	connTok, err := r.pst.cp.EnrollToken(ctx, "connector-token", ConnectorName)
	if err != nil {
		return err
	}
	if r.pst.conn, err = r.spawn("postern-connector", r.topo.ns(NodeServer), nil, r.bin("postern-connector"),
		"--token", connTok, "--state", filepath.Join(r.work, "connector")); err != nil {
		return err
	}
	return nil
}

// posternTunnel starts posternd with a TUN device on a client host, signs
// in with `postern login --password-stdin`, runs `postern up`, resolves the
// resource name through the daemon's DNS and checks one flow end to end.
func (r *runner) posternTunnel(ctx context.Context, key, node, wantPath string) *tunnel {
	label := "Postern (direct)"
	if wantPath == "relay" {
		label = "Postern (relayed)"
	}
	t := &tunnel{key: key, label: label, ns: r.topo.ns(node), iperfPort: IperfPort, echoPort: EchoPort}
	if r.pst == nil || r.pst.conn == nil {
		t.err = fmt.Errorf("%w: Postern was not deployed", ErrTunnelDown)
		return t
	}
	t.err = r.setupPostern(ctx, t, node, wantPath)
	return t
}

func (r *runner) setupPostern(ctx context.Context, t *tunnel, node, wantPath string) error {
	state := filepath.Join(r.work, "posternd-"+node)
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("posternd state dir: %w", err)
	}
	sock := filepath.Join(state, localapi.SocketName)
	d, err := r.spawn("posternd-"+node, t.ns, nil, r.bin("posternd"), "--state", state, "--tun", "postern0")
	if err != nil {
		return err
	}
	r.pst.daemons[node], r.pst.sockets[node] = d, sock
	t.procs = []*proc{d, r.pst.conn}
	t.memProcs = []*proc{d, r.pst.conn}
	if wantPath == "relay" {
		t.procs = append(t.procs, r.pst.relay)
	}
	cli := lab.ClientCLI{Bin: r.bin, NS: t.ns, Socket: sock}
	if err := lab.WaitFile(ctx, d.Proc, sock, 20*time.Second); err != nil {
		return err
	}
	if err := cli.Login(ctx, r.pst.cp, BenchUser, r.pst.password); err != nil {
		return err
	}
	var st localapi.Status
	if err := lab.WaitFor(ctx, 60*time.Second, "posternd connected on "+node, func() error {
		if !d.running() {
			return d.exited()
		}
		st, err = cli.Status(ctx)
		if err != nil {
			return err
		}
		if st.State != localapi.StateConnected && st.State != localapi.StateDegraded {
			return fmt.Errorf("state %s (%s)", st.State, st.Message)
		}
		if st.DNS == "" {
			return fmt.Errorf("no DNS address in status yet")
		}
		return nil
	}); err != nil {
		return err
	}
	dnsAddr := st.DNS
	if _, _, err := net.SplitHostPort(dnsAddr); err != nil {
		dnsAddr = net.JoinHostPort(dnsAddr, "53")
	}
	r.pst.dns = dnsAddr
	out, err := nsRun(ctx, t.ns, nil, "dig", "+short", "+time=2", "+tries=2", "@"+strings.Split(dnsAddr, ":")[0], "-p", portOf(dnsAddr), ResourceName, "A")
	if err != nil {
		return fmt.Errorf("resolve %s through posternd: %w", ResourceName, err)
	}
	ip := lab.LastLine(out)
	if net.ParseIP(ip) == nil {
		return fmt.Errorf("resolve %s through posternd: got %q", ResourceName, out)
	}
	t.host = ip
	if err := r.waitEcho(ctx, t.ns, t.echoAddr(), r.flowWait()); err != nil {
		return fmt.Errorf("%w (postern status: %s)", err, statusLine(ctx, cli))
	}
	st, err = cli.Status(ctx)
	if err != nil {
		return err
	}
	for _, c := range st.Connectors {
		if c.Connected {
			t.detail = fmt.Sprintf("path %s over %s to %s, rtt %.2f ms", c.Path, c.Transport, c.RemoteAddr, c.RTTMillis)
			if c.Path != wantPath {
				return fmt.Errorf("%w: postern status reports path %q, want %q (%s)", ErrTunnelDown, c.Path, wantPath, t.detail)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: no connected connector in postern status: %s", ErrTunnelDown, statusLine(ctx, cli))
}

func portOf(hp string) string {
	_, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "53"
	}
	return p
}

// statusLine is the client's status as one JSON line, for an error message.
func statusLine(ctx context.Context, cli lab.ClientCLI) string {
	st, err := cli.Status(ctx)
	if err != nil {
		return err.Error()
	}
	b, _ := json.Marshal(st)
	return string(b)
}

// flowWait is how long a new Postern tunnel gets to carry its first flow.
func (r *runner) flowWait() time.Duration {
	if r.opts.Quick {
		return 8 * time.Second
	}
	return 15 * time.Second
}

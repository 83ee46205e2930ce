package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/lab"
)

// Server ports on the server host.
const (
	IperfPort    = 5201
	EchoPort     = 7007
	sshIperfPort = 15201 // ssh -L local ports on the client
	sshEchoPort  = 17007
	wgPort       = 51820
	ovpnPort     = 1194
)

// tunnel is one way from a client host to the server host's services.
type tunnel struct {
	key, label string
	ns         string // where the load generators run
	host       string // where they connect
	iperfPort  int
	echoPort   int
	// procs are the tunnel's own processes (their descendants count too);
	// none for the direct reference.
	procs []*proc
	// memProcs are the processes whose RSS counts for memory per flow
	// (default: procs).
	memProcs []*proc
	err      error
	detail   string // e.g. path, cipher
}

func (t *tunnel) iperfAddr() string { return t.host }
func (t *tunnel) echoAddr() string {
	return net.JoinHostPort(t.host, fmt.Sprint(t.echoPort))
}

func pidsOf(ps []*proc) []int {
	var roots []int
	for _, p := range ps {
		if p != nil && p.running() {
			roots = append(roots, p.pid())
		}
	}
	if len(roots) == 0 {
		return nil
	}
	return withDescendants(roots)
}

func (t *tunnel) pids() []int { return pidsOf(t.procs) }

func (t *tunnel) memPids() []int {
	if t.memProcs != nil {
		return pidsOf(t.memProcs)
	}
	return t.pids()
}

// alive reports the first tunnel process that has exited.
func (t *tunnel) alive() error {
	for _, p := range t.procs {
		if p != nil && !p.running() {
			return p.exited()
		}
	}
	return nil
}

// startServers starts iperf3 and the echo server on the server host.
func (r *runner) startServers(ctx context.Context) error {
	srv := r.topo.ns(NodeServer)
	if _, err := r.spawn("iperf3-server", srv, nil, "iperf3", "-s", "-p", fmt.Sprint(IperfPort), "--idle-timeout", "30", "--rcv-timeout", "10000"); err != nil {
		return err
	}
	echo, err := r.spawn("echo-server", srv, nil, r.agentArgs("echo-server", "--addr", fmt.Sprintf(":%d", EchoPort))...)
	if err != nil {
		return err
	}
	r.echo = echo
	if _, err := r.spawn("dns-upstream", r.topo.ns(NodeInfra), nil, r.agentArgs("dns-upstream", "--addr", InfraIP+":53",
		"--zone", "example.test", "--record", "www.example.test="+ExtraWebIP)...); err != nil {
		return err
	}
	if err := r.waitEcho(ctx, r.topo.ns(NodeClient), net.JoinHostPort(ServerIP, fmt.Sprint(EchoPort)), 10*time.Second); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	r.echoBase = countFDs(echo.pid())
	return nil
}

// countFDs is the number of open sockets of a process.
func countFDs(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// echoLeft waits up to timeout for the echo server's connections to drain
// and returns how many are still open: flows the tunnel did not close.
func (r *runner) echoLeft(timeout time.Duration) int {
	if r.echo == nil || !r.echo.running() {
		return 0
	}
	deadline := time.Now().Add(timeout)
	for {
		left := countFDs(r.echo.pid()) - r.echoBase
		if left <= 0 || time.Now().After(deadline) {
			return max(left, 0)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitEcho waits until one request/response through addr succeeds.
func (r *runner) waitEcho(ctx context.Context, ns, addr string, timeout time.Duration) error {
	return lab.WaitFor(ctx, timeout, fmt.Sprintf("echo through %s from %s", addr, ns), func() error {
		var res RRResult
		return r.agentJSON(ctx, ns, &res, "rr", "--addr", addr, "--duration", "20ms")
	})
}

func (r *runner) directTunnel() *tunnel {
	return &tunnel{key: TunDirect, label: "direct TCP", ns: r.topo.ns(NodeClient), host: ServerIP,
		iperfPort: IperfPort, echoPort: EchoPort, detail: "veth, no tunnel"}
}

// wireguardTunnel builds wireguard-go from the module cache and connects
// the two hosts with it (configured with wg(8) over the UAPI socket).
func (r *runner) wireguardTunnel(ctx context.Context) *tunnel {
	t := &tunnel{key: TunWireGuard, label: "wireguard-go", ns: r.topo.ns(NodeClient), host: WGServerIP,
		iperfPort: IperfPort, echoPort: EchoPort}
	t.err = r.setupWireGuard(ctx, t)
	return t
}

func (r *runner) setupWireGuard(ctx context.Context, t *tunnel) error {
	if _, err := exec.LookPath("wg"); err != nil {
		return fmt.Errorf("%w: wg (Debian wireguard-tools)", ErrMissingTool)
	}
	bin := filepath.Join(r.work, "wireguard-go")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "golang.zx2c4.com/wireguard")
	cmd.Dir = r.opts.RepoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build wireguard-go: %w: %s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", "golang.zx2c4.com/wireguard").Output(); err == nil {
		t.detail = "wireguard-go " + strings.TrimSpace(string(out)) + ", MTU 1420"
	}
	keys := map[string]string{}
	for _, side := range []string{"c", "s"} {
		priv, err := run(ctx, nil, "wg", "genkey")
		if err != nil {
			return err
		}
		pub, err := run(ctx, strings.NewReader(priv), "wg", "pubkey")
		if err != nil {
			return err
		}
		f := filepath.Join(r.work, "wg-"+side+".key")
		if err := os.WriteFile(f, []byte(priv), 0o600); err != nil {
			return fmt.Errorf("write wireguard key: %w", err)
		}
		keys[side+"priv"], keys[side+"pub"] = f, strings.TrimSpace(pub)
	}
	env := []string{"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1"}
	type side struct {
		node, dev, ip, peerPub, peerIP, endpoint string
		listen                                   bool
	}
	for _, s := range []side{
		{NodeServer, r.topo.id + "wgs", WGServerIP, keys["cpub"], WGClientIP, "", true},
		{NodeClient, r.topo.id + "wgc", WGClientIP, keys["spub"], WGServerIP, net.JoinHostPort(ServerIP, fmt.Sprint(wgPort)), false},
	} {
		ns := r.topo.ns(s.node)
		p, err := r.spawn("wireguard-go-"+s.node, ns, env, bin, "-f", s.dev)
		if err != nil {
			return err
		}
		t.procs = append(t.procs, p)
		sock := "/var/run/wireguard/" + s.dev + ".sock"
		r.cleanups = append(r.cleanups, func() { _ = os.Remove(sock) })
		if err := lab.WaitFile(ctx, p.Proc, sock, 10*time.Second); err != nil {
			return err
		}
		priv := keys["spriv"]
		if s.node == NodeClient {
			priv = keys["cpriv"]
		}
		args := []string{"wg", "set", s.dev, "private-key", priv}
		if s.listen {
			args = append(args, "listen-port", fmt.Sprint(wgPort))
		}
		args = append(args, "peer", s.peerPub, "allowed-ips", s.peerIP+"/32")
		if s.endpoint != "" {
			args = append(args, "endpoint", s.endpoint)
		}
		if _, err := nsRun(ctx, ns, nil, args...); err != nil {
			return err
		}
		for _, a := range [][]string{{"addr", "add", s.ip + "/24", "dev", s.dev}, {"link", "set", s.dev, "up"}} {
			if _, err := nsRun(ctx, ns, nil, append([]string{"ip"}, a...)...); err != nil {
				return err
			}
		}
	}
	return r.waitEcho(ctx, t.ns, t.echoAddr(), 15*time.Second)
}

// openvpnTunnel runs OpenVPN 2.6 in TLS mode with AES-256-GCM and a
// throwaway PKI made with openssl.
func (r *runner) openvpnTunnel(ctx context.Context) *tunnel {
	t := &tunnel{key: TunOpenVPN, label: "OpenVPN", ns: r.topo.ns(NodeClient), host: OVPNServerIP,
		iperfPort: IperfPort, echoPort: EchoPort}
	t.err = r.setupOpenVPN(ctx, t)
	return t
}

func (r *runner) setupOpenVPN(ctx context.Context, t *tunnel) error {
	if _, err := exec.LookPath("openvpn"); err != nil {
		return fmt.Errorf("%w: openvpn (Debian openvpn)", ErrMissingTool)
	}
	if out, err := exec.CommandContext(ctx, "openvpn", "--version").Output(); err == nil || len(out) > 0 {
		f := strings.Fields(string(out))
		if len(f) > 1 {
			t.detail = "OpenVPN " + f[1] + ", UDP, TLS, AES-256-GCM, userspace (disable-dco)"
		}
	}
	d := filepath.Join(r.work, "openvpn")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("openvpn dir: %w", err)
	}
	p := func(n string) string { return filepath.Join(d, n) }
	ext := "[srv]\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth\n[cli]\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=clientAuth\n"
	if err := os.WriteFile(p("ext.cnf"), []byte(ext), 0o600); err != nil {
		return fmt.Errorf("openvpn pki: %w", err)
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	steps := [][]string{
		append(append([]string{"openssl", "req", "-x509"}, ec...), "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2", "-subj", "/CN=postern-bench-ca"),
	}
	for _, s := range []struct{ name, ext string }{{"server", "srv"}, {"client", "cli"}} {
		steps = append(steps,
			append(append([]string{"openssl", "req"}, ec...), "-keyout", p(s.name+".key"), "-out", p(s.name+".csr"), "-subj", "/CN="+s.name),
			[]string{"openssl", "x509", "-req", "-in", p(s.name + ".csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
				"-out", p(s.name + ".crt"), "-days", "2", "-extfile", p("ext.cnf"), "-extensions", s.ext})
	}
	for _, s := range steps {
		if _, err := run(ctx, nil, s...); err != nil {
			return fmt.Errorf("openvpn pki: %w", err)
		}
	}
	common := fmt.Sprintf("dev-type tun\nproto udp\nca %s\ndata-ciphers AES-256-GCM\ndisable-dco\nverb 3\n", p("ca.crt"))
	server := common + fmt.Sprintf("dev %sovs\nlocal %s\nport %d\ntopology subnet\nserver %s 255.255.255.0\ncert %s\nkey %s\ndh none\nkeepalive 10 60\n",
		r.topo.id, ServerIP, ovpnPort, OVPNNet, p("server.crt"), p("server.key"))
	client := common + fmt.Sprintf("client\ndev %sovc\nremote %s %d\nnobind\ncert %s\nkey %s\nremote-cert-tls server\n",
		r.topo.id, ServerIP, ovpnPort, p("client.crt"), p("client.key"))
	for n, c := range map[string]string{"server.conf": server, "client.conf": client} {
		if err := os.WriteFile(p(n), []byte(c), 0o600); err != nil {
			return fmt.Errorf("openvpn config: %w", err)
		}
	}
	ps, err := r.spawn("openvpn-server", r.topo.ns(NodeServer), nil, "openvpn", "--config", p("server.conf"))
	if err != nil {
		return err
	}
	t.procs = append(t.procs, ps)
	pc, err := r.spawn("openvpn-client", r.topo.ns(NodeClient), nil, "openvpn", "--config", p("client.conf"))
	if err != nil {
		return err
	}
	t.procs = append(t.procs, pc)
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(pc.LogPath)
		if strings.Contains(string(b), "Initialization Sequence Completed") {
			break
		}
		if err := t.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: openvpn client not connected: %s", ErrTimeout, tailFile(pc.LogPath, 600))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r.waitEcho(ctx, t.ns, t.echoAddr(), 15*time.Second)
}

// sshTunnel forwards the iperf3 and echo ports with `ssh -L` through a
// throwaway OpenSSH server on the server host.
func (r *runner) sshTunnel(ctx context.Context) *tunnel {
	t := &tunnel{key: TunSSH, label: "ssh -L", ns: r.topo.ns(NodeClient), host: "127.0.0.1",
		iperfPort: sshIperfPort, echoPort: sshEchoPort}
	t.err = r.setupSSH(ctx, t)
	return t
}

func (r *runner) setupSSH(ctx context.Context, t *tunnel) error {
	for _, tool := range []string{"/usr/sbin/sshd", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s (Debian openssh-server/openssh-client)", ErrMissingTool, tool)
		}
	}
	d := filepath.Join(r.work, "ssh")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("ssh dir: %w", err)
	}
	p := func(n string) string { return filepath.Join(d, n) }
	for _, k := range []string{"host_ed25519", "client_ed25519"} {
		if _, err := run(ctx, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", p(k)); err != nil {
			return err
		}
	}
	pub, err := os.ReadFile(p("client_ed25519.pub"))
	if err != nil {
		return fmt.Errorf("ssh client key: %w", err)
	}
	if err := os.WriteFile(p("authorized_keys"), pub, 0o600); err != nil {
		return fmt.Errorf("ssh authorized_keys: %w", err)
	}
	cfg := fmt.Sprintf("Port 22\nListenAddress %s\nHostKey %s\nPermitRootLogin prohibit-password\nAuthorizedKeysFile %s\n"+
		"StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowTcpForwarding yes\n"+
		"PidFile none\nLogLevel ERROR\nMaxStartups 100\n", ServerIP, p("host_ed25519"), p("authorized_keys"))
	if err := os.WriteFile(p("sshd_config"), []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("sshd config: %w", err)
	}
	// sshd's privilege-separation directory, as the openssh-server package makes it.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return fmt.Errorf("create /run/sshd: %w", err)
	}
	sshd, err := r.spawn("sshd", r.topo.ns(NodeServer), nil, "/usr/sbin/sshd", "-D", "-e", "-f", p("sshd_config"))
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, r, r.topo.ns(NodeClient), net.JoinHostPort(ServerIP, "22"), sshd, 10*time.Second); err != nil {
		return err
	}
	sshc, err := r.spawn("ssh-L", r.topo.ns(NodeClient), nil, "ssh", "-F", "/dev/null", "-i", p("client_ed25519"),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "ExitOnForwardFailure=yes", "-N", "-v",
		"-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", sshIperfPort, IperfPort),
		"-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", sshEchoPort, EchoPort),
		"root@"+ServerIP)
	if err != nil {
		return err
	}
	t.procs = []*proc{sshc, sshd}
	if err := r.waitEcho(ctx, t.ns, t.echoAddr(), 15*time.Second); err != nil {
		return err
	}
	b, _ := os.ReadFile(sshc.LogPath)
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.Index(line, "kex: server->client cipher: "); i >= 0 {
			t.detail = "OpenSSH, cipher " + strings.Fields(line[i+len("kex: server->client cipher: "):])[0]
		}
	}
	return nil
}

// waitTCP waits until a TCP connect to addr from ns succeeds.
func waitTCP(ctx context.Context, r *runner, ns, addr string, p *proc, timeout time.Duration) error {
	host, port, _ := net.SplitHostPort(addr)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p != nil && !p.running() {
			return p.exited()
		}
		if _, err := nsRun(ctx, ns, nil, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port)); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%w: connect %s from %s", ErrTimeout, addr, ns)
}

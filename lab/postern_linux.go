package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/localapi"
)

// verbose adds -v to a Postern program's command line when Options.Verbose
// is set.
func (l *Lab) verbose(args ...string) []string {
	if l.opts.Verbose {
		return append(args, "-v")
	}
	return args
}

// Output runs a command in a node and returns its stdout only (stderr goes
// into the error when it fails).
func (l *Lab) Output(ctx context.Context, node string, args ...string) (string, error) {
	cmd, err := l.Command(ctx, node, args...)
	if err != nil {
		return "", err
	}
	return stdoutOnly(cmd, node, nil, args)
}

// ControlPlane is the lab's controller as its administrator reaches it
// (from the controller's node), once deployed.
func (l *Lab) ControlPlane() *ControlPlane {
	return &ControlPlane{Bin: l.Bin, NS: l.NS(NodeController), URL: l.ControllerURL, CAFile: l.CAFile,
		AdminTokenFile: l.AdminTokenFile, Dir: l.Dir}
}

func (l *Lab) deployPostern(ctx context.Context) error {
	dataDir := filepath.Join(l.Dir, "controller")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("controller data dir: %w", err)
	}
	l.ControllerURL = "https://" + ControllerIP
	listen := "0.0.0.0:" + ControllerPort
	if l.opts.Underlay6 || l.opts.IPv6OnlyClient {
		// By name, as a real deployment: the name has an AAAA record
		// (Underlay6) or the DNS64 synthesizes one (IPv6OnlyClient).
		l.ControllerURL = "https://" + ControllerName
	}
	if l.opts.Underlay6 {
		listen = "[::]:" + ControllerPort
	}
	l.CAFile = filepath.Join(dataDir, "ca.pem")
	l.AdminTokenFile = filepath.Join(dataDir, "admin-token")
	l.progress("lab %s: starting postern-controller at %s", l.ID, l.ControllerURL)
	serveArgs := []string{l.Bin("postern-controller"), "serve",
		"--data", dataDir, "--listen", listen, "--public-url", l.ControllerURL}
	if l.opts.TokenTTL > 0 {
		serveArgs = append(serveArgs, "--token-ttl", l.opts.TokenTTL.String())
	}
	var env []string
	if l.opts.ControllerReplicas >= 2 {
		if err := l.startControllerDB(ctx); err != nil {
			return err
		}
		serveArgs, env = append(serveArgs, replicaArgs(ControllerIP)...), l.controllerDBEnv()
	}
	ctl, err := l.Spawn(ProgController, NodeController, env, serveArgs...)
	if err != nil {
		return err
	}
	if err := l.WaitController(ctx, ctl); err != nil {
		return err
	}
	if l.opts.ControllerReplicas >= 2 {
		l.progress("lab %s: starting the second controller replica at %s", l.ID, ControllerBURL())
		if err := l.startControllerB(ctx, dataDir); err != nil {
			return err
		}
	}
	l.progress("lab %s: applying network.yaml (users, groups, resources)", l.ID)
	if err := l.Apply(ctx, l.Network); err != nil {
		return err
	}
	l.progress("lab %s: enrolling the relay and the connectors", l.ID)
	relayTok, err := l.ControlPlane().EnrollToken(ctx, "relay-token", "relay-1")
	if err != nil {
		return err
	}
	relayListen, relayIP := "0.0.0.0:", RelayIP
	if l.opts.Underlay6 {
		// The relay is advertised at its IPv6 address: STUN, TURN and
		// signaling over IPv6, IPv6 relayed addresses.
		relayListen, relayIP = "[::]:", Relay6IP
	}
	relay, err := l.Spawn(ProgRelay, NodeRelay, nil, l.verbose(l.Bin("postern-relay"), "--token", relayTok,
		"--listen-udp", relayListen+RelayUDPPort, "--listen-tls", relayListen+RelayTLSPort, "--public-ip", relayIP,
		"--state", filepath.Join(l.Dir, "relay"))...)
	if err != nil {
		return err
	}
	for _, c := range []struct{ node, prog string }{{NodeConnectorA, ProgConnectorA}, {NodeConnectorB, ProgConnectorB}} {
		tok, err := l.ControlPlane().EnrollToken(ctx, "connector-token", c.node)
		if err != nil {
			return err
		}
		if _, err := l.Spawn(c.prog, c.node, nil, l.verbose(l.Bin("postern-connector"), "--token", tok,
			"--state", filepath.Join(l.Dir, "connector-"+c.node))...); err != nil {
			return err
		}
	}
	if err := l.waitListening(ctx, NodeRelay, "udp", RelayUDPPort, 20*time.Second, relay); err != nil {
		return err
	}
	for _, c := range []struct{ node, user, prog string }{{NodeClient, Alice, ProgDaemon}, {NodeClientBob, Bob, ProgDaemonBob}} {
		l.progress("lab %s: starting posternd for %s and signing in", l.ID, c.user)
		if err := l.startClient(ctx, c.node, c.user, c.prog); err != nil {
			return err
		}
	}
	for _, c := range []string{NodeClient, NodeClientBob} {
		if err := l.WaitClientState(ctx, c, 60*time.Second, localapi.StateConnected); err != nil {
			return err
		}
	}
	l.progress("lab %s: postern is up", l.ID)
	return nil
}

// WaitController waits until the controller answers /healthz with its CA.
func (l *Lab) WaitController(ctx context.Context, ctl *Proc) error {
	return l.ControlPlane().Wait(ctx, ctl, 30*time.Second)
}

// Apply makes the controller match spec with `postern-controller apply`.
func (l *Lab) Apply(ctx context.Context, spec NetworkSpec) error {
	return l.ApplyVia(ctx, l.ControllerURL, spec)
}

// ApplyVia applies spec through the controller (replica) at url.
func (l *Lab) ApplyVia(ctx context.Context, url string, spec NetworkSpec) error {
	return l.ControlPlane().Apply(ctx, url, spec)
}

// Admin runs another postern-controller admin subcommand (with --url, --ca
// and --token-file filled in) from the controller's namespace.
func (l *Lab) Admin(ctx context.Context, sub string, args ...string) (string, error) {
	return l.ControlPlane().Admin(ctx, sub, args...)
}

func (l *Lab) startClient(ctx context.Context, node, user, prog string) error {
	state := filepath.Join(l.Dir, "posternd-"+node)
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("posternd state dir: %w", err)
	}
	cs := &clientState{node: node, user: user, proc: prog, state: state, socket: filepath.Join(state, localapi.SocketName)}
	l.mu.Lock()
	l.clients[node] = cs
	l.mu.Unlock()
	p, err := l.Spawn(prog, node, nil, l.verbose(l.Bin("posternd"), "--state", state, "--tun", "postern0")...)
	if err != nil {
		return err
	}
	if err := WaitFile(ctx, p, cs.socket, 20*time.Second); err != nil {
		return err
	}
	return l.Login(ctx, node, user)
}

// Login signs a client in as user (`postern login --password-stdin`) and
// brings the tunnel up (`postern up`).
func (l *Lab) Login(ctx context.Context, node, user string) error {
	pw, ok := l.Passwords[user]
	if !ok {
		return fmt.Errorf("login %s: no password for that user in the lab's network.yaml", user)
	}
	cs, err := l.client(node)
	if err != nil {
		return err
	}
	return l.cli(cs).Login(ctx, l.ControlPlane(), user, pw)
}

// cli is the postern command line of a client node's daemon.
func (l *Lab) cli(cs *clientState) ClientCLI {
	return ClientCLI{Bin: l.Bin, NS: l.NS(cs.node), Socket: cs.socket}
}

func (l *Lab) client(node string) (*clientState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs, ok := l.clients[node]
	if !ok {
		return nil, fmt.Errorf("%w %q: no posternd runs there", ErrUnknownNode, node)
	}
	return cs, nil
}

// Socket is the local API socket of the daemon in a client node.
func (l *Lab) Socket(node string) string {
	cs, err := l.client(node)
	if err != nil {
		return ""
	}
	return cs.socket
}

// Postern runs the postern CLI against the daemon of a client node.
func (l *Lab) Postern(ctx context.Context, node string, args ...string) (string, error) {
	cs, err := l.client(node)
	if err != nil {
		return "", err
	}
	return l.cli(cs).Run(ctx, nil, args...)
}

// Status is `postern status --json` of a client node.
func (l *Lab) Status(ctx context.Context, node string) (localapi.Status, error) {
	cs, err := l.client(node)
	if err != nil {
		return localapi.Status{}, err
	}
	return l.cli(cs).Status(ctx)
}

// WaitClientState waits until a client's daemon reports one of states.
func (l *Lab) WaitClientState(ctx context.Context, node string, timeout time.Duration, states ...string) error {
	return l.WaitStatus(ctx, node, timeout, "state "+strings.Join(states, "/"), func(st localapi.Status) bool {
		for _, s := range states {
			if st.State == s {
				return true
			}
		}
		return false
	})
}

// WaitStatus waits until a client's status satisfies ok.
func (l *Lab) WaitStatus(ctx context.Context, node string, timeout time.Duration, what string, ok func(localapi.Status) bool) error {
	var last localapi.Status
	err := WaitFor(ctx, timeout, node+" "+what, func() error {
		st, err := l.Status(ctx, node)
		if err != nil {
			return err
		}
		last = st
		if !ok(st) {
			return fmt.Errorf("status is %s (%s)", st.State, st.Message)
		}
		return nil
	})
	if err != nil {
		b, _ := json.Marshal(last)
		return fmt.Errorf("%w; last status: %s", err, b)
	}
	return nil
}

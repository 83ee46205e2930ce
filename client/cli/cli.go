// Package cli implements the postern command line: login, up, down, logout,
// status, resources and dns, all over the daemon's local API.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"postern.dev/postern/client"
	"postern.dev/postern/client/sso"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
	"postern.dev/postern/version"
)

const usage = `usage: postern [--socket PATH] COMMAND [flags]

commands:
  login [--controller URL] [--ca FILE] [--user EMAIL --password-stdin | --service-key FILE | --device]
                      (no credential flag: single sign-on in the browser)
  up                  connect (after login the tunnel is up already)
  down                disconnect, stay signed in
  logout              sign out and forget the session
  status [--json]     who is signed in, connectors in use, flows
  resources [--json]  resources you may reach
  dns NAME [--json]   how NAME resolves right now
  netcheck [--json]   relays over UDP and TLS, NAT behaviour, candidate pairs per connector
  mfa enroll [--webauthn] | mfa [--code N | --webauthn] | mfa remove [--webauthn] | mfa status
                      second factor (TOTP app, or a security key in the browser) for resources that require it
  posture [--json]    what this device reports (OS, disk encryption, firewall) and the verdict
  request RESOURCE --for DURATION --reason TEXT
                      ask for time-boxed access (resources that need approval, or locked ones)
  requests [--json]   my requests, and those I may approve
  approve ID [--for DURATION] | deny ID --reason TEXT
  version             this program's and the daemon's versions (--version: this program's)

login without --controller uses the preset controller (POSTERN_CONTROLLER_URL,
/etc/default/posternd, HKLM\SOFTWARE\Postern) or the one signed in to last.
The socket defaults to $POSTERN_SOCKET, else %s.
`

// IO bundles the streams the CLI uses (tests substitute them).
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// Main runs the CLI and returns the process exit code.
func Main(args []string, stdio IO) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return Run(ctx, args, stdio)
}

// Run is Main with a context.
func Run(ctx context.Context, args []string, stdio IO) int {
	fs := flag.NewFlagSet("postern", flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	sock := fs.String("socket", "", "path of posternd's local API socket")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { fmt.Fprintf(stdio.Err, usage, client.DefaultSocket()) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdio.Out, "postern", versionString())
		return 0
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	path := *sock
	if path == "" {
		path = os.Getenv(localapi.EnvSocket)
	}
	if path == "" {
		path = client.DefaultSocket()
	}
	c := &cmd{lc: localapi.NewClient(path), io: stdio, socket: path}
	defer c.lc.Close()
	name, rest := fs.Arg(0), fs.Args()[1:]
	var err error
	switch name {
	case "login":
		err = c.login(ctx, rest)
	case "logout":
		err = c.simple(ctx, rest, "logout", c.lc.Logout)
	case "up":
		err = c.simple(ctx, rest, "up", c.lc.Up)
	case "down":
		err = c.simple(ctx, rest, "down", c.lc.Down)
	case "status":
		err = c.status(ctx, rest)
	case "resources":
		err = c.resources(ctx, rest)
	case "dns":
		err = c.dns(ctx, rest)
	case "netcheck":
		err = c.netcheck(ctx, rest)
	case "mfa":
		err = c.mfa(ctx, rest)
	case "posture":
		err = c.posture(ctx, rest)
	case "request":
		err = c.request(ctx, rest)
	case "requests":
		err = c.requests(ctx, rest)
	case "approve", "deny":
		err = c.decide(ctx, name, rest)
	case "version":
		st, serr := c.lc.Status(ctx)
		fmt.Fprintln(stdio.Out, "postern", versionString())
		if serr == nil {
			fmt.Fprintln(stdio.Out, "posternd", st.Version)
		}
	case "help", "-h", "--help":
		fs.Usage()
		return 0
	default:
		fmt.Fprintf(stdio.Err, "postern: unknown command %q\n", name)
		fs.Usage()
		return 2
	}
	if err != nil {
		c.report(err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

type cmd struct {
	lc     *localapi.Client
	io     IO
	socket string
}

// report prints an error and what to do about it.
func (c *cmd) report(err error) {
	if errors.Is(err, errUsage) {
		fmt.Fprintf(c.io.Err, "postern: %v\n", strings.TrimPrefix(err.Error(), "usage: "))
		return
	}
	if errors.Is(err, localapi.ErrDaemonNotRunning) {
		fmt.Fprintf(c.io.Err, "postern: %v\n", err)
		fmt.Fprintf(c.io.Err, "  start it: sudo posternd --state %s  (or sudo systemctl start posternd);\n", stateDirOf(c.socket))
		fmt.Fprintln(c.io.Err, "  for another daemon pass --socket PATH or set POSTERN_SOCKET")
		return
	}
	var ae *localapi.APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(c.io.Err, "postern: %s\n", ae.Err.Error)
		if ae.Err.Hint != "" {
			fmt.Fprintf(c.io.Err, "  %s\n", ae.Err.Hint)
		}
		return
	}
	fmt.Fprintf(c.io.Err, "postern: %v\n", err)
}

func stateDirOf(sock string) string {
	if i := strings.LastIndexAny(sock, `/\`); i > 0 {
		return sock[:i]
	}
	return client.DefaultStateDir()
}

func (c *cmd) login(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(c.io.Err)
	ctl := fs.String("controller", "", "controller URL, https://...")
	ca := fs.String("ca", "", "PEM file of the deployment CA (the controller's DATA/ca.pem), when not in the system roots")
	user := fs.String("user", "", "email of a built-in account")
	pwStdin := fs.Bool("password-stdin", false, "read the password from standard input")
	sk := fs.String("service-key", "", "service account key file (JSON)")
	device := fs.Bool("device", false, "single sign-on with a code shown here, approved in a browser elsewhere (no local browser needed)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: login flags", errUsage)
	}
	if *ctl == "" {
		// IT's preset; else the daemon uses its own preset or the
		// controller signed in to last, and says so when it has none.
		if p, err := preset.Load(); err == nil {
			*ctl = p.ControllerURL
		}
	}
	req := localapi.LoginRequest{ControllerURL: *ctl}
	if *ca != "" {
		b, err := os.ReadFile(*ca)
		if err != nil {
			return fmt.Errorf("read CA file: %w", err)
		}
		if !strings.Contains(string(b), "BEGIN CERTIFICATE") {
			return fmt.Errorf("%w: %s holds no PEM certificate", errUsage, *ca)
		}
		req.CAPEM = string(b)
	}
	switch {
	case *device && (*sk != "" || *user != ""):
		return fmt.Errorf("%w: --device is a single sign-on: do not combine it with --user or --service-key", errUsage)
	case *sk != "" && (*user != "" || *pwStdin):
		return fmt.Errorf("%w: give either --user/--password-stdin or --service-key, not both", errUsage)
	case *sk != "":
		b, err := os.ReadFile(*sk)
		if err != nil {
			return fmt.Errorf("read service key: %w", err)
		}
		req.ServiceKey = string(b)
	case *user != "":
		if !*pwStdin {
			return fmt.Errorf("%w: --user needs --password-stdin (the password is never a command-line argument)", errUsage)
		}
		pw, err := bufio.NewReader(c.io.In).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password from stdin: %w", err)
		}
		pw = strings.TrimRight(pw, "\r\n")
		if pw == "" {
			return fmt.Errorf("%w: empty password on stdin", errUsage)
		}
		req.Email, req.Password = *user, pw
	case *device:
		dr, err := c.lc.SSODevice(ctx, localapi.SSODeviceRequest{ControllerURL: req.ControllerURL, CAPEM: req.CAPEM})
		if err != nil {
			return err
		}
		u := dr.VerificationURIComplete
		if u == "" {
			u = dr.VerificationURI
		}
		fmt.Fprintf(c.io.Out, "To sign in, open %s and enter the code %s (valid until %s).\n", u, dr.UserCode, dr.ExpiresAt.Local().Format(time.Kitchen))
		req.OIDCDeviceFlow = dr.Flow
	default:
		// Browser sign-in: the daemon starts it at the controller, the
		// browser comes back to a loopback port of this process.
		grant, err := sso.Browser(ctx, sso.DaemonStarter{C: c.lc, ControllerURL: req.ControllerURL, CAPEM: req.CAPEM}, sso.BrowserOptions{
			Notify: func(u string) {
				fmt.Fprintf(c.io.Out, "Opening your browser to sign in. If it does not open, visit:\n  %s\n", u)
			},
		})
		if err != nil {
			return fmt.Errorf("browser sign-in: %w (without a browser here use --device, or --user/--service-key)", err)
		}
		req.OIDC = grant
	}
	timeout := 60 * time.Second
	if req.OIDCDeviceFlow != "" {
		timeout = 15 * time.Minute // until the user approves elsewhere
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := c.lc.Login(ctx, req)
	if err != nil {
		return err
	}
	who := ""
	if st.Principal != nil {
		who = st.Principal.Name
	}
	fmt.Fprintf(c.io.Out, "Signed in to %s as %s (%s)\n", st.ControllerURL, who, st.State)
	return nil
}

func (c *cmd) simple(ctx context.Context, args []string, name string, fn func(context.Context) (localapi.Status, error)) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: %s takes no arguments", errUsage, name)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := fn(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.io.Out, "%s\n", describeState(st))
	return nil
}

func describeState(st localapi.Status) string {
	switch st.State {
	case localapi.StateSignedOut:
		if st.Message != "" {
			return "Signed out: " + st.Message + "."
		}
		return "Signed out."
	case localapi.StateStopped:
		return "Signed in, disconnected (postern up to connect)."
	case localapi.StateConnecting:
		return "Connecting..."
	case localapi.StateConnected:
		return "Connected."
	case localapi.StateDegraded:
		s := "Connected, degraded"
		var why []string
		if noConnectorReachable(st) {
			s = "Degraded"
			why = append(why, "no connector reachable ("+connectorStates(st)+")")
		} else if len(st.Connectors) == 0 && strings.HasPrefix(st.Message, "no connector online") {
			s = "Degraded"
			why = append(why, st.Message)
		}
		if !st.ControllerReachable && st.ControllerURL != "" {
			c := "controller " + st.ControllerURL + " unreachable"
			if !st.ControllerDownSince.IsZero() {
				c += " since " + st.ControllerDownSince.Local().Format(time.RFC3339)
			}
			c += "; running connections and valid tokens keep working"
			why = append(why, c)
		}
		if len(why) > 0 {
			s += ": " + strings.Join(why, "; ")
		}
		return s + "."
	}
	return st.State
}

// noConnectorReachable reports whether connectors are known and none of
// them has a live connection.
func noConnectorReachable(st localapi.Status) bool {
	if len(st.Connectors) == 0 {
		return false
	}
	for _, cs := range st.Connectors {
		if cs.Connected {
			return false
		}
	}
	return true
}

// connectorStates lists each connector with its state and since when.
func connectorStates(st localapi.Status) string {
	parts := make([]string, 0, len(st.Connectors))
	for _, cs := range st.Connectors {
		parts = append(parts, cs.Name+" "+connectorState(cs))
	}
	return strings.Join(parts, ", ")
}

// connectorState is e.g. "reconnecting since 15:04:05".
func connectorState(cs localapi.ConnectorStatus) string {
	s := cs.State
	if s == "" {
		s = "disconnected"
		if cs.Connected {
			s = "connected"
		}
	}
	if !cs.Since.IsZero() && s != "connected" {
		s += " since " + cs.Since.Local().Format("15:04:05")
	}
	return s
}

func jsonFlag(name string, args []string, c *cmd) (bool, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.io.Err)
	j := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return false, nil, fmt.Errorf("%w: %s flags", errUsage, name)
	}
	return *j, fs.Args(), nil
}

// onlyJSONFlag parses the command line of a command whose only flag is
// --json and that takes no arguments.
func onlyJSONFlag(name string, args []string, c *cmd) (bool, error) {
	asJSON, rest, err := jsonFlag(name, args, c)
	if err != nil {
		return false, err
	}
	if len(rest) > 0 {
		return false, fmt.Errorf("%w: %s takes no arguments", errUsage, name)
	}
	return asJSON, nil
}

func (c *cmd) printJSON(v any) error {
	enc := json.NewEncoder(c.io.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cmd) status(ctx context.Context, args []string) error {
	asJSON, err := onlyJSONFlag("status", args, c)
	if err != nil {
		return err
	}
	st, err := c.lc.Status(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(st)
	}
	out := c.io.Out
	fmt.Fprintf(out, "State:       %s\n", describeState(st))
	if st.Principal != nil {
		fmt.Fprintf(out, "Signed in:   %s (%s)\n", st.Principal.Name, st.Principal.Kind)
	}
	if st.ControllerURL != "" && st.State == localapi.StateSignedOut {
		fmt.Fprintf(out, "Controller:  %s (sign in: postern login)\n", st.ControllerURL)
	} else if st.ControllerURL != "" {
		reach := "reachable"
		if !st.ControllerReachable {
			reach = "UNREACHABLE"
			if !st.ControllerDownSince.IsZero() {
				reach += " since " + st.ControllerDownSince.Local().Format(time.RFC3339)
			}
		}
		fmt.Fprintf(out, "Controller:  %s (%s)\n", st.ControllerURL, reach)
	}
	if st.TUN != "" {
		fmt.Fprintf(out, "TUN:         %s (DNS %s)\n", st.TUN, st.DNS)
		if len(st.Ranges) > 0 {
			fmt.Fprintf(out, "Ranges:      %s\n", strings.Join(st.Ranges, ", "))
		}
	}
	if st.SOCKS5 != "" {
		fmt.Fprintf(out, "SOCKS5:      %s (user:password in %s)\n", st.SOCKS5, st.SOCKS5Secret)
	}
	fmt.Fprintf(out, "Flows:       %d active, %d total; %s up, %s down\n", st.ActiveFlows, st.TotalFlows, bytesStr(st.BytesUp), bytesStr(st.BytesDown))
	if st.Message != "" && st.State != localapi.StateConnected && st.State != localapi.StateSignedOut {
		fmt.Fprintf(out, "Last error:  %s\n", st.Message)
	}
	for _, w := range st.Warnings {
		fmt.Fprintf(out, "Warning:     %s\n", w)
	}
	if len(st.Connectors) > 0 {
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CONNECTOR\tNETWORK\tSTATE\tPATH\tREMOTE\tRTT\tFLOWS\tUP\tDOWN")
		for _, cs := range st.Connectors {
			path := cs.Path
			if !cs.Connected {
				path = "-"
			} else if cs.Transport != "" {
				path += "/" + cs.Transport
			}
			rtt := "-"
			if cs.Connected {
				rtt = fmt.Sprintf("%.1fms", cs.RTTMillis)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", cs.Name, cs.Network, connectorState(cs), path, orDash(cs.RemoteAddr), rtt, cs.ActiveFlows, bytesStr(cs.BytesUp), bytesStr(cs.BytesDown))
		}
		_ = tw.Flush()
		for _, cs := range st.Connectors {
			if !cs.Connected && cs.LastError != "" {
				fmt.Fprintf(out, "%s: %s (since %s, last error: %s)\n", cs.Name, orDash(cs.State), cs.Since.Local().Format(time.RFC3339), cs.LastError)
			}
		}
	}
	if st.State != localapi.StateSignedOut {
		if rs, err := c.lc.Resources(ctx); err == nil {
			if warn := accessWarnings(rs); len(warn) > 0 {
				fmt.Fprintln(out)
				fmt.Fprintln(out, "Access needed:")
				for _, w := range warn {
					fmt.Fprintf(out, "  %s\n", w)
				}
			}
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesStr(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (c *cmd) resources(ctx context.Context, args []string) error {
	asJSON, err := onlyJSONFlag("resources", args, c)
	if err != nil {
		return err
	}
	rs, err := c.lc.Resources(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(rs)
	}
	if len(rs) == 0 {
		st, err := c.lc.Status(ctx)
		if err == nil && st.State == localapi.StateSignedOut {
			return fmt.Errorf("not signed in: run postern login --controller URL ...")
		}
		fmt.Fprintln(c.io.Out, "No resources (ask your admin for access).")
		return nil
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	tw := tabwriter.NewWriter(c.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tNETWORK\tPORTS\tACCESS")
	for _, r := range rs {
		ports := strings.Join(r.Ports, ",")
		if ports == "" {
			ports = "all"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Address, r.Network, ports, accessNote(r.Access))
	}
	return tw.Flush()
}

func (c *cmd) dns(ctx context.Context, args []string) error {
	asJSON, rest, err := jsonFlag("dns", args, c)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: dns NAME", errUsage)
	}
	ex, err := c.lc.DNS(ctx, rest[0])
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(ex)
	}
	out := c.io.Out
	fmt.Fprintf(out, "Name:        %s\n", ex.Name)
	if ex.Resource != "" {
		fmt.Fprintf(out, "Resource:    %s (matches %s)\n", ex.Resource, ex.Pattern)
	} else {
		fmt.Fprintln(out, "Resource:    none")
	}
	if len(ex.Synthetic) > 0 {
		fmt.Fprintf(out, "Answer:      %s (synthetic)\n", strings.Join(ex.Synthetic, ", "))
	}
	if len(ex.Connectors) > 0 {
		fmt.Fprintf(out, "Connectors:  %s\n", strings.Join(ex.Connectors, ", "))
	}
	if ex.Upstream != "" {
		fmt.Fprintf(out, "Upstream:    %s\n", ex.Upstream)
	}
	if len(ex.Answer) > 0 {
		fmt.Fprintf(out, "Answer:      %s\n", strings.Join(ex.Answer, ", "))
	}
	switch {
	case ex.Mode == "tun":
		fmt.Fprintf(out, "Mode:        TUN, synthetic ranges %s\n", strings.Join(ex.Ranges, ", "))
	case ex.Mode == "socks5":
		fmt.Fprintln(out, "Mode:        SOCKS5 (names resolve at the connector; no synthetic ranges)")
	case ex.Mode == "down":
		fmt.Fprintln(out, "Mode:        tunnel down (postern up)")
	}
	if ex.Note != "" {
		fmt.Fprintf(out, "Note:        %s\n", ex.Note)
	}
	return nil
}

func versionString() string { return version.Version }

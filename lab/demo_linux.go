package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

func (o *DemoOptions) defaults() {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Progress == nil {
		o.Progress = o.Out
	}
	o.Postern = !o.TopologyOnly
}

// demoStep is one command the demo shows, run in alice's namespace.
type demoStep struct {
	title string
	shown string // as the user would type it
	args  []string
	env   []string
}

// ClientEnv is the environment the demo's commands and shell use in alice's
// namespace (the PostgreSQL password; ssh needs nothing: the lab writes an
// ssh_config for that namespace).
func (l *Lab) ClientEnv() []string {
	return []string{
		"PGPASSWORD=" + l.PGPassword, "PGUSER=" + PGUser, "PGDATABASE=" + PGDatabase,
		"POSTERN_SOCKET=" + l.Socket(NodeClient),
	}
}

// Demo builds the lab, shows Postern at work from alice's laptop, opens a
// shell there (unless NonInteractive) and cleans up. It fails if any
// demonstrated command fails.
func Demo(ctx context.Context, opts DemoOptions) error {
	opts.TopologyOnly = false
	opts.defaults()
	return withLab(ctx, opts, func(l *Lab, out io.Writer) error {
		return l.demo(ctx, opts, out)
	})
}

// withLab starts the lab, runs fn with it and the options' output, and
// cleans up (keeping the work directory when fn or the start failed).
func withLab(ctx context.Context, opts DemoOptions, fn func(l *Lab, out io.Writer) error) (err error) {
	l, err := Start(ctx, opts.Options)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(err != nil); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	return fn(l, opts.Out)
}

// demo runs the demonstrated commands on a started lab, then the shell.
func (l *Lab) demo(ctx context.Context, opts DemoOptions, out io.Writer) error {
	fmt.Fprintf(out, "\nAlice's laptop (%s, behind the home NAT %s) reaches private hosts behind the corporate NAT %s.\n", ClientIP, HomeWANIP, CorpWANIP)
	if opts.ReachableConnectors {
		fmt.Fprintf(out, "(Variant: the corporate NAT forwards UDP to the connectors' QUIC port; --reachable-connectors=false is the full NAT.)\n\n")
	} else {
		fmt.Fprintf(out, "The corporate NAT admits nothing inbound: the connectors opened no port.\n\n")
	}
	postern := l.Bin("postern")
	steps := []demoStep{
		{"SSH to the private host, by name", "ssh db.corp.internal hostname", []string{"ssh", DBName, "hostname"}, nil},
		{"Query the private PostgreSQL database", fmt.Sprintf("psql -h %s -U %s -d %s -c 'select name, location from servers'", DBName, PGUser, PGDatabase),
			[]string{"psql", "-h", DBName, "-U", PGUser, "-d", PGDatabase, "-c", "select name, location from servers order by name"}, l.ClientEnv()},
		{"Fetch the private web page (wildcard resource *.corp.internal)", "curl http://web.corp.internal/", []string{"curl", "-sS", "--max-time", "10", "http://" + WebName + "/"}, nil},
		{"Reach a host inside the CIDR resource " + SubnetCIDR, "curl http://" + SubnetHostIP + "/", []string{"curl", "-sS", "--max-time", "10", "http://" + SubnetHostIP + "/"}, nil},
		{"IPv6 resources: SSH to a name with only an AAAA record", "ssh -6 " + DB6Name + " hostname", []string{"ssh", "-6", DB6Name, "hostname"}, nil},
		{"IPv6 resources: a host inside the CIDR resource " + Subnet6CIDR, "curl -g http://[" + SubnetHost6IP + "]/", []string{"curl", "-sS", "-g", "--max-time", "10", "http://[" + SubnetHost6IP + "]/"}, nil},
		{"Public names still resolve through the normal resolver", "dig +short " + PublicName, []string{"dig", "+short", "+time=3", PublicName}, nil},
		{"What the client sees", "postern status", []string{postern, "--socket", l.Socket(NodeClient), "status"}, nil},
	}
	var failed []string
	for _, s := range steps {
		fmt.Fprintf(out, "## %s\n$ %s\n", s.title, s.shown)
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		cmd, cerr := l.Command(sctx, NodeClient, s.args...)
		if cerr != nil {
			cancel()
			return cerr
		}
		cmd.Env = append(cmd.Env, s.env...)
		b, rerr := cmd.CombinedOutput()
		cancel()
		fmt.Fprintf(out, "%s", indentOutput(string(b)))
		if rerr != nil {
			fmt.Fprintf(out, "!! failed: %v\n", rerr)
			failed = append(failed, s.shown)
		}
		fmt.Fprintln(out)
	}
	if len(failed) > 0 {
		return fmt.Errorf("demo: %d command(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	if opts.NonInteractive {
		fmt.Fprintln(out, "Demo done (non-interactive); cleaning up.")
		return nil
	}
	return l.Shell(ctx, NodeClient, out)
}

// Shell opens an interactive shell in a node's namespace, with the client
// environment set; it returns when the shell exits.
func (l *Lab) Shell(ctx context.Context, node string, out io.Writer) error {
	fmt.Fprintf(out, "Opening a shell on %s (namespace %s). Try: ssh %s, psql -h %s, curl http://%s/, postern status.\nType exit to end the demo and clean up.\n",
		node, l.NS(node), DBName, DBName, WebName)
	// Ctrl-C inside the shell interrupts the shell's command, not the lab:
	// the shell outlives the signal context, and the lab's programs run in
	// their own process groups.
	cmd, err := l.Command(context.WithoutCancel(ctx), node, "bash", "--norc", "-i")
	if err != nil {
		return err
	}
	cmd.Env = append(cmd.Env, l.ClientEnv()...)
	cmd.Env = append(cmd.Env, "PS1=[postern-lab "+node+"] \\w# ", "PATH="+l.opts.BinDir+":"+os.Getenv("PATH"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil // the shell's last command failed; not the demo's fault
		}
		return fmt.Errorf("shell: %w", err)
	}
	return nil
}

func indentOutput(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}

// Up builds the lab and keeps it running until ctx ends (Ctrl-C), printing
// how to enter the namespaces.
func Up(ctx context.Context, opts DemoOptions) error {
	opts.defaults()
	return withLab(ctx, opts, func(l *Lab, out io.Writer) error {
		l.printAccess(ctx, out)
		return nil
	})
}

// printAccess prints how to enter the lab's namespaces and waits for ctx.
func (l *Lab) printAccess(ctx context.Context, out io.Writer) {
	fmt.Fprint(out, "\n"+l.NamespaceHint())
	fmt.Fprintf(out, "\nWork dir: %s\nLogs:     %s\n", l.Dir, l.LogDir)
	if l.ControllerURL != "" {
		fmt.Fprintf(out, "Controller: %s  (CA %s, admin token %s)\n", l.ControllerURL, l.CAFile, l.AdminTokenFile)
		fmt.Fprintf(out, "alice's daemon socket: %s   bob's: %s\n", l.Socket(NodeClient), l.Socket(NodeClientBob))
	}
	fmt.Fprintf(out, "SSH key for db.corp.internal: %s (ssh is preconfigured in the client and connector namespaces)\n", l.SSHKey)
	fmt.Fprintf(out, "PostgreSQL: user %s password %s database %s\n", PGUser, l.PGPassword, PGDatabase)
	fmt.Fprintf(out, "\nExample: sudo ip netns exec %s ssh %s hostname\n", l.NS(NodeClient), DBName)
	fmt.Fprintln(out, "Press Ctrl-C to stop and clean up.")
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping the lab...")
}

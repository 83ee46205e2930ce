package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"postern.dev/postern/traversal"
)

// netcheck prints the daemon's network check: relays over UDP and TLS with
// round trips, the NAT's mapping behaviour and, per connector, the
// candidate pairs checked and the outcome.
func (c *cmd) netcheck(ctx context.Context, args []string) error {
	asJSON, err := onlyJSONFlag("netcheck", args, c)
	if err != nil {
		return err
	}
	raw, err := c.lc.Netcheck(ctx)
	if err != nil {
		return err
	}
	var rep traversal.Diagnosis
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("decode netcheck report: %w", err)
	}
	if asJSON {
		return c.printJSON(rep)
	}
	printNetcheck(c, rep)
	return nil
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

func printNetcheck(c *cmd, rep traversal.Diagnosis) {
	out := c.io.Out
	fmt.Fprintf(out, "Local UDP socket: %s\n\nRelays:\n", rep.LocalAddr)
	if len(rep.Relays) == 0 {
		fmt.Fprintln(out, "  none in the policy")
	}
	tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
	for _, r := range rep.Relays {
		udp := "unreachable: " + r.UDPErr
		if r.UDP {
			udp = "ok " + ms(r.UDPRTT) + ", sees you as " + r.Reflexive
		}
		tls := "unreachable: " + r.TLSErr
		if r.TLS {
			tls = "ok " + ms(r.TLSRTT)
		}
		fmt.Fprintf(tw, "  %s\tUDP %s\t%s\n", r.Name, r.UDPAddr, udp)
		fmt.Fprintf(tw, "  \tTLS %s\t%s\n", r.TLSAddr, tls)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nNAT mapping: %s\n", rep.NAT.Mapping)
	for _, o := range rep.NAT.Observations {
		fmt.Fprintf(out, "  %s\n", o)
	}
	if rep.NAT.Note != "" {
		fmt.Fprintf(out, "  (%s)\n", rep.NAT.Note)
	}
	fmt.Fprintln(out, "\nConnectors:")
	if len(rep.Connectors) == 0 {
		fmt.Fprintln(out, "  none dialed yet")
	}
	for _, cr := range rep.Connectors {
		if cr.Connected {
			fmt.Fprintf(out, "  %s: connected, %s/%s to %s", cr.Connector, cr.Path.Path, cr.Path.Transport, cr.Path.RemoteAddr)
			if cr.Path.Relay != "" {
				fmt.Fprintf(out, " via %s", cr.Path.Relay)
			}
			if cr.Path.RTT > 0 {
				fmt.Fprintf(out, ", rtt %s", ms(cr.Path.RTT))
			}
			fmt.Fprintln(out)
		} else {
			fmt.Fprintf(out, "  %s: last dial failed at %s: %s\n", cr.Connector, cr.At.Local().Format(time.TimeOnly), cr.Error)
		}
		tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
		for _, p := range cr.Pairs {
			outcome := "no answer"
			switch {
			case p.Validated:
				outcome = "valid"
			case p.LastError != "":
				outcome = p.LastError
			}
			fmt.Fprintf(tw, "    %s\t%s\tfrom %s\t%d checks, %d answers\t%s\n", p.Kind, p.Remote, p.Local, p.Checks, p.Answers, outcome)
		}
		tw.Flush()
	}
}

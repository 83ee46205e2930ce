package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/skip2/go-qrcode"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
	"postern.dev/postern/policy"
)

// Access governance commands (docs/access.md): mfa, posture, request,
// requests, approve, deny.

// parseInterspersed parses fs allowing flags after positional arguments
// ("request prod-db --for 2h") and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *cmd) newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.io.Err)
	return fs
}

// readCode asks for a TOTP code on the terminal (or reads it from stdin).
func (c *cmd) readCode(prompt string) (string, error) {
	fmt.Fprint(c.io.Err, prompt)
	line, err := bufio.NewReader(c.io.In).ReadString('\n')
	code := strings.TrimSpace(line)
	if code == "" {
		if err != nil {
			return "", fmt.Errorf("no code given: %w", err)
		}
		return "", errors.New("no code given")
	}
	return code, nil
}

func (c *cmd) mfa(ctx context.Context, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, rest := args[0], args[1:]
		switch sub {
		case "enroll":
			fs := c.newFlags("mfa enroll")
			webauthn := fs.Bool("webauthn", false, "enroll a security key through the browser instead of a TOTP app")
			if pos, err := parseInterspersed(fs, rest); err != nil {
				return err
			} else if len(pos) > 0 {
				return fmt.Errorf("%w: mfa enroll takes no arguments (only --webauthn)", errUsage)
			}
			if *webauthn {
				return c.mfaWebAuthn(ctx, true)
			}
			return c.mfaEnroll(ctx)
		case "remove":
			return c.mfaRemove(ctx, rest)
		case "status":
			st, err := c.lc.MFAStatus(ctx)
			if err != nil {
				return err
			}
			c.printMFAStatus(st)
			return nil
		}
		return fmt.Errorf("%w: mfa: unknown subcommand %q (enroll, remove, status, or --code N)", errUsage, sub)
	}
	fs := c.newFlags("mfa")
	code := fs.String("code", "", "the TOTP code (asked for when not given)")
	webauthn := fs.Bool("webauthn", false, "use a security key through the browser")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: mfa: unexpected %q", errUsage, pos[0])
	}
	if *webauthn {
		if *code != "" {
			return fmt.Errorf("%w: mfa: give --code or --webauthn, not both", errUsage)
		}
		return c.mfaWebAuthn(ctx, false)
	}
	if *code == "" {
		if *code, err = c.readCode("TOTP code: "); err != nil {
			return err
		}
	}
	st, err := c.lc.MFAVerify(ctx, *code)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.io.Out, "Second factor accepted.")
	c.printMFAStatus(st)
	return nil
}

func (c *cmd) printMFAStatus(st controlapi.MFAStatus) {
	switch {
	case !st.Enrolled:
		fmt.Fprintln(c.io.Out, "MFA: not enrolled (postern mfa enroll)")
	case st.Pending:
		fmt.Fprintln(c.io.Out, "MFA: enrolled, not confirmed yet (postern mfa, with the code your app shows)")
	case st.LastAt.IsZero():
		fmt.Fprintln(c.io.Out, "MFA: enrolled; no second factor on this device yet (postern mfa)")
	default:
		fmt.Fprintf(c.io.Out, "MFA: enrolled; last second factor on this device at %s\n", st.LastAt.Local().Format("2006-01-02 15:04"))
	}
	if st.SecurityKeys > 0 {
		fmt.Fprintf(c.io.Out, "Security keys: %d (postern mfa --webauthn)\n", st.SecurityKeys)
	}
}

func (c *cmd) mfaEnroll(ctx context.Context) error {
	enr, err := c.lc.MFAEnroll(ctx)
	if err != nil {
		return err
	}
	q, err := qrcode.New(enr.URI, qrcode.Medium)
	if err != nil {
		return fmt.Errorf("render QR code: %w", err)
	}
	fmt.Fprintln(c.io.Out, "Scan this with your authenticator app (or enter the secret by hand):")
	fmt.Fprintln(c.io.Out)
	fmt.Fprint(c.io.Out, q.ToSmallString(false))
	fmt.Fprintln(c.io.Out)
	fmt.Fprintf(c.io.Out, "URI:    %s\n", enr.URI)
	fmt.Fprintf(c.io.Out, "Secret: %s\n", enr.Secret)
	fmt.Fprintln(c.io.Out)
	fmt.Fprintln(c.io.Out, "Then confirm with the code it shows: postern mfa")
	return nil
}

func (c *cmd) mfaRemove(ctx context.Context, args []string) error {
	fs := c.newFlags("mfa remove")
	code := fs.String("code", "", "a current TOTP code (asked for when needed)")
	webauthn := fs.Bool("webauthn", false, "remove your security keys (after a step-up: postern mfa --webauthn)")
	if pos, err := parseInterspersed(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: mfa remove: unexpected %q", errUsage, pos[0])
	}
	if *webauthn {
		if err := c.lc.WebAuthnRemove(ctx); err != nil {
			return err
		}
		fmt.Fprintln(c.io.Out, "Security keys removed.")
		return nil
	}
	err := c.lc.MFARemove(ctx, *code)
	var ae *localapi.APIError
	if *code == "" && errors.As(err, &ae) && strings.Contains(ae.Err.Error, "code is required") {
		cd, rerr := c.readCode("TOTP code: ")
		if rerr != nil {
			return rerr
		}
		err = c.lc.MFARemove(ctx, cd)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(c.io.Out, "Second factor removed. Resources that require MFA stay closed until you enroll again.")
	return nil
}

func (c *cmd) posture(ctx context.Context, args []string) error {
	asJSON, err := onlyJSONFlag("posture", args, c)
	if err != nil {
		return err
	}
	p, err := c.lc.Posture(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(p)
	}
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	r := p.Report
	fmt.Fprintf(c.io.Out, "OS:              %s %s (%s)\n", r.OS, r.OSVersion, orDash(r.OSName))
	fmt.Fprintf(c.io.Out, "Disk encryption: %s\n", onOff(r.DiskEncryption))
	fmt.Fprintf(c.io.Out, "Firewall:        %s\n", onOff(r.Firewall))
	fmt.Fprintf(c.io.Out, "Client:          %s\n", r.ClientVersion)
	fmt.Fprintf(c.io.Out, "Profiles met:    %s\n", orDash(strings.Join(p.Verdict.Satisfied, ", ")))
	for prof, why := range p.Verdict.Failed {
		fmt.Fprintf(c.io.Out, "Profile %s: not met: %s\n", prof, why)
	}
	fmt.Fprintln(c.io.Out, "(posture is reported by this device itself; see docs/access.md)")
	return nil
}

func (c *cmd) request(ctx context.Context, args []string) error {
	fs := c.newFlags("request")
	dur := fs.String("for", "", "how long, e.g. 2h (at most the resource's max)")
	reason := fs.String("reason", "", "why you need it (shown to approvers, kept in the audit log)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *dur == "" || strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: request RESOURCE --for DURATION --reason TEXT", errUsage)
	}
	if _, err := policy.ParseDuration(*dur); err != nil {
		return fmt.Errorf("%w: --for: %v", errUsage, err)
	}
	r, err := c.lc.Request(ctx, controlapi.AccessRequestCreate{Resource: pos[0], Duration: *dur, Reason: *reason})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.io.Out, "Requested %s for %s: request %s is %s; an approver decides (postern requests shows it).\n", r.Resource, r.Duration, r.ID, r.State)
	return nil
}

func (c *cmd) requests(ctx context.Context, args []string) error {
	asJSON, err := onlyJSONFlag("requests", args, c)
	if err != nil {
		return err
	}
	rs, err := c.lc.Requests(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(rs)
	}
	if len(rs) == 0 {
		fmt.Fprintln(c.io.Out, "No access requests.")
		return nil
	}
	return printRequests(c.io.Out, rs, true)
}

// printRequests renders requests as a table.
func printRequests(w interface{ Write([]byte) (int, error) }, rs []controlapi.AccessRequest, decideColumn bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRESOURCE\tREQUESTER\tSTATE\tFOR\tDETAIL\tREASON")
	for _, r := range rs {
		detail := "-"
		switch r.State {
		case "active":
			detail = fmt.Sprintf("until %s by %s", r.End.Local().Format("15:04"), r.DecidedBy)
		case "expired":
			detail = fmt.Sprintf("ended %s", r.End.Local().Format("2006-01-02 15:04"))
		case "denied":
			detail = fmt.Sprintf("by %s: %s", r.DecidedBy, r.DecideReason)
		case "pending":
			if decideColumn && r.CanDecide {
				detail = "you may approve: postern approve " + r.ID
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Resource, r.Requester, r.State, r.Duration, detail, r.Reason)
	}
	return tw.Flush()
}

func (c *cmd) decide(ctx context.Context, verb string, args []string) error {
	fs := c.newFlags(verb)
	dur, reason := new(string), new(string)
	if verb == "approve" {
		fs.StringVar(dur, "for", "", "grant for less than requested, e.g. 1h")
		fs.StringVar(reason, "reason", "", "note for the audit log")
	} else {
		fs.StringVar(reason, "reason", "", "why (required)")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		if verb == "approve" {
			return fmt.Errorf("%w: approve ID [--for DURATION]", errUsage)
		}
		return fmt.Errorf("%w: deny ID --reason TEXT", errUsage)
	}
	if verb == "deny" && strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: deny ID --reason TEXT (a reason is required)", errUsage)
	}
	r, err := c.lc.Decide(ctx, pos[0], verb, controlapi.AccessDecision{Duration: *dur, Reason: *reason})
	if err != nil {
		return err
	}
	if r.State == "denied" {
		fmt.Fprintf(c.io.Out, "Denied %s's request %s for %s.\n", r.Requester, r.ID, r.Resource)
		return nil
	}
	fmt.Fprintf(c.io.Out, "Approved %s's request %s: %s until %s.\n", r.Requester, r.ID, r.Resource, r.End.Local().Format(time.DateTime))
	return nil
}

// accessNote is what resources and status show for a resource's access.
func accessNote(a *controlapi.ResourceAccess) string {
	if a == nil {
		return "ok"
	}
	if a.Message != "" {
		return a.Message
	}
	return a.State
}

// accessWarnings lists the resources the user cannot reach now, and why.
func accessWarnings(rs []localapi.Resource) []string {
	var out []string
	for _, r := range rs {
		if r.Access != nil && r.Access.State != "ok" {
			out = append(out, fmt.Sprintf("%s: %s", r.Name, accessNote(r.Access)))
		}
	}
	return out
}

package controllercli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"postern.dev/postern/controlapi"
)

// requests is `postern-controller requests list|approve|deny`: the admin's
// view of just-in-time access requests (docs/access.md). The admin may
// decide any request, also for resources without approvers (an unlock after
// auto-lock).
func requests(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: requests list|approve|deny --url URL --ca FILE --token-file FILE [ID]", ErrUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("requests "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	u, ca, tf := adminFlags(fs)
	var dur, reason *string
	asJSON := new(bool)
	switch verb {
	case "list":
		asJSON = fs.Bool("json", false, "print JSON")
	case "approve":
		dur = fs.String("for", "", "grant for less than requested, e.g. 1h")
		reason = fs.String("reason", "", "note for the audit log")
	case "deny":
		reason = fs.String("reason", "", "why (required)")
	default:
		return fmt.Errorf("%w: requests: unknown action %q (list, approve or deny)", ErrUsage, verb)
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	a, err := newAdminClient(*u, *ca, *tf)
	if err != nil {
		return err
	}
	if verb == "list" {
		if len(pos) > 0 {
			return fmt.Errorf("%w: requests list takes no ID", ErrUsage)
		}
		var rs []controlapi.AccessRequest
		if err := a.do(http.MethodGet, controlapi.PathAccessRequests, "", nil, &rs); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(rs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRESOURCE\tREQUESTER\tSTATE\tFOR\tDECIDED BY\tEND\tREASON")
		for _, r := range rs {
			end := "-"
			if !r.End.IsZero() {
				end = r.End.Local().Format(time.DateTime)
			}
			by := r.DecidedBy
			if by == "" {
				by = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Resource, r.Requester, r.State, r.Duration, by, end, r.Reason)
		}
		return tw.Flush()
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: requests %s needs exactly one ID", ErrUsage, verb)
	}
	dec := controlapi.AccessDecision{}
	if dur != nil {
		dec.Duration = *dur
	}
	if reason != nil {
		dec.Reason = *reason
	}
	if verb == "deny" && strings.TrimSpace(dec.Reason) == "" {
		return fmt.Errorf("%w: requests deny ID --reason TEXT (a reason is required)", ErrUsage)
	}
	body, _ := json.Marshal(dec)
	var r controlapi.AccessRequest
	if err := a.do(http.MethodPost, controlapi.PathAccessRequests+"/"+url.PathEscape(pos[0])+"/"+verb, "application/json", body, &r); err != nil {
		return err
	}
	if r.State == "denied" {
		fmt.Fprintf(stdout, "Denied %s's request %s for %s.\n", r.Requester, r.ID, r.Resource)
	} else {
		fmt.Fprintf(stdout, "Approved %s's request %s: %s until %s.\n", r.Requester, r.ID, r.Resource, r.End.Local().Format(time.DateTime))
	}
	return nil
}

package controllercli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"postern.dev/postern/controller"
)

const adminsUsage = "admins add|list|remove|token|revoke-token --url URL --ca FILE --token-file FILE ..."

// admins is `postern-controller admins add|list|remove|token|revoke-token`:
// named administrators with roles (docs/console.md). Passwords are read from
// a file (or - for stdin), never from the command line.
func admins(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", ErrUsage, adminsUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("admins "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	u, ca, tf := adminFlags(fs)
	var role, pwFile, purpose *string
	var ttl *time.Duration
	asJSON := new(bool)
	switch verb {
	case "add":
		role = fs.String("role", "", "owner, admin, approver or auditor (required)")
		pwFile = fs.String("password-file", "", "file holding the console password (- for stdin); none: single sign-on only")
	case "list":
		asJSON = fs.Bool("json", false, "print JSON")
	case "remove", "revoke-token":
	case "token":
		role = fs.String("role", "", "the token's role (default: the admin's; never more)")
		purpose = fs.String("name", "", "what the token is for")
		ttl = fs.Duration("ttl", 90*24*time.Hour, "how long the token stays valid (0: no expiry)")
	default:
		return fmt.Errorf("%w: admins: unknown action %q (add, list, remove, token or revoke-token)", ErrUsage, verb)
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	want := 1
	if verb == "list" {
		want = 0
	}
	if len(pos) != want {
		return fmt.Errorf("%w: admins %s takes %d argument(s): %s", ErrUsage, verb, want, adminsUsage)
	}
	a, err := newAdminClient(*u, *ca, *tf)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		req := controller.AdminRequest{Name: pos[0], Role: *role}
		if *pwFile != "" {
			var b []byte
			if *pwFile == "-" {
				b, err = io.ReadAll(os.Stdin)
			} else {
				b, err = os.ReadFile(*pwFile)
			}
			if err != nil {
				return fmt.Errorf("read password: %w", err)
			}
			req.Password = strings.TrimRight(string(b), "\r\n")
		}
		body, _ := json.Marshal(req)
		var v controller.AdminView
		if err := a.do(http.MethodPost, controller.PathAdmins, "application/json", body, &v); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Added %s (%s), id %s.\n", v.Name, v.Role, v.ID)
	case "list":
		var as, ts struct {
			Items json.RawMessage `json:"items"`
		}
		if err := a.do(http.MethodGet, controller.PathAdmins, "", nil, &as); err != nil {
			return err
		}
		if err := a.do(http.MethodGet, controller.PathAdminTokens, "", nil, &ts); err != nil {
			return err
		}
		var admins []controller.AdminView
		var tokens []controller.AdminTokenView
		json.Unmarshal(as.Items, &admins)
		json.Unmarshal(ts.Items, &tokens)
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"admins": admins, "tokens": tokens})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tPASSWORD\tID")
		for _, v := range admins {
			pw := "no (SSO only)"
			if v.HasPassword {
				pw = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Role, pw, v.ID)
		}
		fmt.Fprintln(tw, "\nTOKEN\tADMIN\tROLE\tEXPIRES\tLAST USED")
		for _, t := range tokens {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Admin, t.Role, stamp(t.ExpiresAt), stamp(t.LastUsed))
		}
		return tw.Flush()
	case "remove":
		if err := a.do(http.MethodDelete, controller.PathAdmins+"/"+url.PathEscape(pos[0]), "", nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Removed %s with its tokens and console sessions.\n", pos[0])
	case "token":
		body, _ := json.Marshal(controller.AdminTokenRequest{Admin: pos[0], Role: *role, Name: *purpose, TTLSeconds: int64(ttl.Seconds())})
		var v controller.AdminTokenView
		if err := a.do(http.MethodPost, controller.PathAdminTokens, "application/json", body, &v); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "Token %s for %s (%s), expires %s; shown once:\n", v.ID, v.Admin, v.Role, stamp(v.ExpiresAt))
		fmt.Fprintln(stdout, v.Token)
	case "revoke-token":
		if err := a.do(http.MethodDelete, controller.PathAdminTokens+"/"+url.PathEscape(pos[0]), "", nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Revoked token %s.\n", pos[0])
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.DateTime)
}

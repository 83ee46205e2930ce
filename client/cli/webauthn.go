package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"postern.dev/postern/client/sso"
	"postern.dev/postern/controlapi"
)

// openBrowser shows a ceremony page; tests replace it with a browser they drive.
var openBrowser = sso.OpenBrowser

// webauthnPoll is how often the CLI asks whether the browser finished.
const webauthnPoll = 500 * time.Millisecond

// mfaWebAuthn runs a WebAuthn ceremony (enroll a security key, or step up
// with one) in the browser, as sign-in does: the controller's page does
// the work, this command waits until the controller says it is done.
func (c *cmd) mfaWebAuthn(ctx context.Context, register bool) error {
	cer, err := c.lc.WebAuthnBegin(ctx, register)
	if err != nil {
		return err
	}
	what := "confirm it is you with your security key"
	if register {
		what = "enroll a security key"
	}
	fmt.Fprintf(c.io.Out, "Opening your browser to %s. If it does not open, visit:\n  %s\n", what, cer.URL)
	if err := openBrowser(cer.URL); err != nil {
		fmt.Fprintf(c.io.Err, "postern: %v (open the URL above by hand)\n", err)
	}
	// Until the ceremony expires, plus a little for the last answer.
	ctx, cancel := context.WithDeadline(ctx, cer.Expires.Add(5*time.Second))
	defer cancel()
	tick := time.NewTicker(webauthnPoll)
	defer tick.Stop()
	for cer.State == controlapi.WebAuthnPending {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the browser did not finish by %s; run the command again", cer.Expires.Local().Format(time.Kitchen))
			}
			return ctx.Err()
		case <-tick.C:
		}
		if cer, err = c.lc.WebAuthnCeremony(ctx, cer.ID); err != nil {
			return err
		}
	}
	if cer.State != controlapi.WebAuthnDone {
		return fmt.Errorf("security key: %s", cer.Error)
	}
	if register {
		fmt.Fprintln(c.io.Out, "Security key enrolled; it counts as your second factor now.")
	} else {
		fmt.Fprintln(c.io.Out, "Second factor accepted.")
	}
	if cer.MFA != nil {
		c.printMFAStatus(*cer.MFA)
	}
	return nil
}

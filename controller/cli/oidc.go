package controllercli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/controller"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// oidcFlags are serve's single sign-on flags. The client secret is only
// ever read from a file (or DATA/oidc.yaml), never from the command line,
// where other users of the machine could see it.
type oidcFlags struct {
	configFile      *string
	issuer          *string
	clientID        *string
	secretFile      *string
	groupsClaim     *string
	emailClaim      *string
	scopes          *string
	redirects       stringList
	caFile          *string
	refresh         *time.Duration
	allowUnverified *bool
}

func addOIDCFlags(fs *flag.FlagSet) *oidcFlags {
	f := &oidcFlags{
		configFile:      fs.String("oidc-config", "", "single sign-on settings file (default DATA/"+controller.OIDCConfigFile+" when it exists)"),
		issuer:          fs.String("oidc-issuer", "", "OpenID Connect issuer URL of the identity provider (enables single sign-on)"),
		clientID:        fs.String("oidc-client-id", "", "client id registered for Postern at the identity provider"),
		secretFile:      fs.String("oidc-client-secret-file", "", "file holding the client secret (never pass the secret itself)"),
		groupsClaim:     fs.String("oidc-groups-claim", "", `ID token claim mapped to Postern groups (default "groups")`),
		emailClaim:      fs.String("oidc-email-claim", "", `claim naming the user (default "email")`),
		scopes:          fs.String("oidc-scopes", "", `extra scopes, comma-separated (e.g. "groups" for Okta)`),
		caFile:          fs.String("oidc-ca", "", "PEM CA bundle to trust for the identity provider (besides the system roots)"),
		refresh:         fs.Duration("oidc-refresh-interval", 0, "how often OIDC sessions are re-checked with the identity provider (default 5m)"),
		allowUnverified: fs.Bool("oidc-allow-unverified-email", false, "accept ID tokens whose email_verified is false (such users still link no existing account by e-mail)"),
	}
	fs.Var(&f.redirects, "oidc-redirect-url", "redirect URL clients may use (repeatable; loopback http URLs match any port; default http://127.0.0.1/callback and http://[::1]/callback)")
	return f
}

// config merges the settings file and the flags (flags win). It returns nil
// when single sign-on is not configured at all.
func (f *oidcFlags) config(fs *flag.FlagSet, dataDir string) (*controller.OIDCConfig, error) {
	var oc *controller.OIDCConfig
	path, explicit := *f.configFile, *f.configFile != ""
	if !explicit {
		path = filepath.Join(dataDir, controller.OIDCConfigFile)
	}
	if _, err := os.Stat(path); explicit || err == nil {
		c, err := controller.LoadOIDCConfig(path)
		if err != nil {
			return nil, err
		}
		oc = c
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("oidc settings %s: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) {
		if strings.HasPrefix(fl.Name, "oidc-") && fl.Name != "oidc-config" {
			set[fl.Name] = true
		}
	})
	if len(set) == 0 {
		return oc, nil
	}
	if oc == nil {
		oc = &controller.OIDCConfig{}
	}
	str := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	str("oidc-issuer", &oc.Issuer, *f.issuer)
	str("oidc-client-id", &oc.ClientID, *f.clientID)
	if set["oidc-client-secret-file"] {
		oc.ClientSecretFile, oc.ClientSecret = *f.secretFile, ""
	}
	str("oidc-groups-claim", &oc.GroupsClaim, *f.groupsClaim)
	str("oidc-email-claim", &oc.EmailClaim, *f.emailClaim)
	str("oidc-ca", &oc.CAFile, *f.caFile)
	if set["oidc-scopes"] {
		oc.Scopes = nil
		for _, s := range strings.FieldsFunc(*f.scopes, func(r rune) bool { return r == ',' || r == ' ' }) {
			oc.Scopes = append(oc.Scopes, s)
		}
	}
	if set["oidc-redirect-url"] {
		oc.RedirectURLs = append([]string(nil), f.redirects...)
	}
	if set["oidc-refresh-interval"] {
		oc.RefreshInterval = *f.refresh
	}
	if set["oidc-allow-unverified-email"] {
		oc.AllowUnverifiedEmail = *f.allowUnverified
	}
	return oc, nil
}

package oidcauth

import (
	"errors"
	"testing"
	"time"
)

func TestEmailVerifiedClaim(t *testing.T) {
	p := &Provider{cfg: Config{EmailClaim: "email", GroupsClaim: "groups"}}
	lax := &Provider{cfg: Config{EmailClaim: "email", GroupsClaim: "groups", AllowUnverifiedEmail: true}}
	for _, tc := range []struct {
		claim    any
		verified bool
		refused  bool // by default
		bad      bool // refused even when unverified addresses are allowed
	}{
		{claim: true, verified: true},
		{claim: "true", verified: true},
		{claim: " TRUE ", verified: true},
		{claim: false, refused: true},
		{claim: "false", refused: true},
		{claim: "False", refused: true},
		{claim: nil},
		{claim: "yes", refused: true, bad: true},
		{claim: 1.0, refused: true, bad: true},
	} {
		claims := map[string]any{"email": "a@example.com"}
		if tc.claim != nil {
			claims["email_verified"] = tc.claim
		}
		id, err := p.identity("https://idp", "sub", time.Time{}, claims)
		if tc.refused {
			if !errors.Is(err, ErrRefused) {
				t.Errorf("email_verified %#v: %v, want refused", tc.claim, err)
			}
		} else if err != nil || id.EmailVerified != tc.verified {
			t.Errorf("email_verified %#v: %+v %v, want verified=%v", tc.claim, id, err, tc.verified)
		}
		id, err = lax.identity("https://idp", "sub", time.Time{}, claims)
		if tc.bad {
			if !errors.Is(err, ErrRefused) {
				t.Errorf("lax, email_verified %#v: %v, want refused", tc.claim, err)
			}
		} else if err != nil || id.EmailVerified != tc.verified {
			t.Errorf("lax, email_verified %#v: %+v %v, want verified=%v", tc.claim, id, err, tc.verified)
		}
	}
}

# Tray app and single sign-on (issue 8): targeted test runs.
.PHONY: test-sso test-tray

# OIDC against a real oidc-provider (needs Node.js 20+ and npm).
test-sso:
	$(GO) test -race -count=1 ./controller/oidcauth/... ./client/sso/...

# The tray's logic and the real postern-tray under dbus-run-session.
test-tray:
	$(GO) test -race -count=1 ./tray/... ./cmd/postern-tray/...

# Screenshots of the real postern-tray on xfce4-panel under Xvfb, against the
# real posternd (docs/tray.md); the same test runs in make test without
# keeping them.
.PHONY: tray-screenshots
tray-screenshots:
	@mkdir -p docs/tray
	POSTERN_TRAY_SHOTS=$(CURDIR)/docs/tray $(GO) test -count=1 -run 'TestTrayOnXfcePanel' -v ./tray/

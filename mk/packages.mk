# Signed installers and packages (issue 9; docs/packaging.md).
#
#   make packages                      # everything into dist/; without keys, signed with
#                                      # THROWAWAY dev keys from dist/dev-keys/, labelled -devkey
#   make packages RELEASE=1            # release: refuses unless real keys (and WINTUN_DLL) are set
#   make packages PKG_ARCHES="amd64 arm64"
#   make packages PKGFLAGS="--unsigned --msi-test"   # development only, labelled
#
# Keys and wintun.dll come from the environment: POSTERN_GPG_KEY_FILE,
# POSTERN_GPG_PASSPHRASE(_FILE), POSTERN_CODESIGN_CERT + POSTERN_CODESIGN_KEY
# (or POSTERN_CODESIGN_PKCS12), POSTERN_CODESIGN_PASSWORD(_FILE), WINTUN_DLL.
PKG_ARCHES  ?= $(shell $(GO) env GOARCH)
PKG_OUT     ?= dist
PKG_BUILD   := $(PKG_OUT)/.build
PKGFLAGS    ?=
PKG_VERSION := $(patsubst v%,%,$(VERSION))
RELEASE     ?=
ifeq ($(RELEASE),1)
PKG_MODE    := --release
else
PKG_MODE    := --dev-keys $(PKG_OUT)/dev-keys
endif

.PHONY: packages packages-bins packages-preflight packages-test

# Checks the keys before minutes of cross-building: RELEASE=1 stops here
# without real keys; otherwise missing keys become development keys.
packages-preflight:
	$(GO) run ./cmd/postern-pkg --preflight --targets linux,msi $(PKG_MODE) $(PKGFLAGS)

packages-bins: packages-preflight
	@for a in $(PKG_ARCHES); do \
	  echo "linux/$$a programs"; \
	  GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PKG_BUILD)/linux-$$a/ $(addprefix ./cmd/,$(PROGRAMS)) || exit 1; \
	  echo "linux/$$a static connector (image)"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PKG_BUILD)/static-$$a/postern-connector ./cmd/postern-connector || exit 1; \
	done
	@echo "windows/amd64 programs"
	GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PKG_BUILD)/windows-amd64/ ./cmd/posternd ./cmd/postern
	GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS) -H=windowsgui' -o $(PKG_BUILD)/windows-amd64/ ./cmd/postern-tray

packages: packages-bins
	@for a in $(PKG_ARCHES); do \
	  $(GO) run ./cmd/postern-pkg --version '$(PKG_VERSION)' --arch $$a --bin $(PKG_BUILD)/linux-$$a --out $(PKG_OUT) --targets linux $(PKG_MODE) $(PKGFLAGS) || exit 1; \
	done
	$(GO) run ./cmd/postern-pkg --version '$(PKG_VERSION)' --win-bin $(PKG_BUILD)/windows-amd64 --out $(PKG_OUT) \
	  --connector-bin '$(subst $(eval) ,$(comma),$(foreach a,$(PKG_ARCHES),$(a)=$(PKG_BUILD)/static-$(a)/postern-connector))' \
	  --targets msi,oci,helm $(PKG_MODE) $(PKGFLAGS)
	@echo "packages in $(PKG_OUT)/"

# The packaging acceptance tests alone (they are also part of `make test`).
packages-test:
	$(GO) test -count=1 -timeout 15m ./installer/...

comma := ,

# Postern build, test and demo entry points. See README.md.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS   := -s -w -X postern.dev/postern/version.Version=$(VERSION)
PROGRAMS  := postern-controller postern-connector postern-relay posternd postern postern-tray
TOOLS     := postern-lab postern-loadgen
# postern-tray needs cgo + Apple's SDK on darwin (fyne.io/systray), so it is left
# out of the darwin cross-build; everything else cross-builds for both.
DARWIN_PROGRAMS := $(filter-out postern-tray,$(PROGRAMS))

.PHONY: all build deps test test-unit test-e2e check bench demo packages clean

all: build

deps:
	bash scripts/install-deps.sh

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(PROGRAMS) $(TOOLS))

# The README's test command: installs what the tests need, builds, runs every
# test (unit tests with -race, then the network-namespace end-to-end suites).
test: deps build
	bash scripts/test.sh

check:
	$(GO) vet ./...
	bash scripts/quic-go.sh verify
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for p in $(PROGRAMS) $(TOOLS); do echo "windows/amd64 $$p"; GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/$$p || exit 1; done
	@for p in $(DARWIN_PROGRAMS) $(TOOLS); do echo "darwin/arm64 $$p"; GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/$$p || exit 1; done

bench: deps build
	bash scripts/bench.sh $(BENCHFLAGS)

demo: deps build
	./bin/postern-lab demo $(DEMOFLAGS)

clean:
	rm -rf bin dist

# Component-specific targets (packages, lab, bench details) live in mk/*.mk.
-include mk/*.mk

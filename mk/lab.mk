# The lab (issue 7): `make demo` (in the Makefile) runs bin/postern-lab demo.
.PHONY: lab-up e2e test-lab

# Keep a lab running until Ctrl-C (LABFLAGS=--topology-only for just the network).
lab-up: build
	./bin/postern-lab up $(LABFLAGS)

# The lab's own tests (needs root).
test-lab:
	go test -count=1 -timeout 8m ./lab/

# The end-to-end suite alone (needs root and make build).
e2e: build
	POSTERN_E2E=1 POSTERN_BIN="$(CURDIR)/bin" go test -count=1 -timeout 12m -v ./lab/e2e/ $(E2EFLAGS)

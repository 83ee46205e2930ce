# Fuzzing: every target listed in scripts/test.d/20-fuzz.sh (make test runs
# each for its number of executions). make fuzz [FUZZTIME=60s] [FUZZ_ONLY=FuzzApply|controller]
FUZZTIME ?= 10s

.PHONY: fuzz

fuzz:
	FUZZTIME=$(FUZZTIME) FUZZ_ONLY=$(FUZZ_ONLY) bash scripts/test.d/20-fuzz.sh

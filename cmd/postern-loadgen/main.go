// Command postern-loadgen simulates devices and connectors against a
// Postern controller (or its replicas) and reports what the control plane
// sustained (package loadgen). Point it at a test deployment, never at
// production: it applies its own network.yaml.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/loadgen"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "postern-loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("postern-loadgen", flag.ContinueOnError)
	url := fs.String("controller", "", "controller URL, or replicas' URLs separated by commas (https://HOST:PORT)")
	caFile := fs.String("ca", "", "the deployment CA certificate (DATA/ca.pem)")
	tokFile := fs.String("token-file", "", "admin token file (DATA/admin-token); it replaces the test deployment's network.yaml")
	devices := fs.Int("devices", 1000, "simulated devices")
	connectors := fs.Int("connectors", 100, "simulated connectors")
	conc := fs.Int("concurrency", 64, "sign-ins and token requests in flight")
	perAccount := fs.Int("per-account", 100, "devices per service account")
	phase := fs.Duration("token-phase", 10*time.Second, "how long Connection Tokens are requested flat out")
	pids := fs.String("pids", "", "controller process ids (comma-separated) to report CPU and memory of (Linux)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *caFile == "" || *tokFile == "" {
		return fmt.Errorf("--controller, --ca and --token-file are required")
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("--ca %s: no PEM certificate", *caFile)
	}
	tok, err := os.ReadFile(*tokFile)
	if err != nil {
		return err
	}
	var ps []int
	for _, f := range strings.Split(*pids, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("--pids %q: %v", *pids, err)
		}
		ps = append(ps, p)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := loadgen.Run(ctx, loadgen.Config{URL: *url, Roots: roots, AdminToken: strings.TrimSpace(string(tok)),
		Devices: *devices, Connectors: *connectors, Concurrency: *conc, PerAccount: *perAccount, TokenPhase: *phase, PIDs: ps,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Printf("devices %d, connectors %d (%v)\n", rep.Devices, rep.Connectors, rep.Elapsed.Round(time.Second))
	fmt.Printf("sign-ins      %8.0f/s  %v\n", rep.SignIns.PerSecond(), rep.SignInLatency)
	fmt.Printf("enrollments   %8.0f/s\n", rep.Enrollments.PerSecond())
	fmt.Printf("tokens        %8.0f/s  %v\n", rep.Tokens.PerSecond(), rep.TokenLatency)
	fmt.Printf("heartbeats    %8.0f/s\n", rep.Heartbeats.PerSecond())
	fmt.Printf("policy change to devices:    %v\n", rep.ToDevices)
	fmt.Printf("policy change to connectors: %v\n", rep.ToConnectors)
	for _, c := range rep.Controllers {
		fmt.Printf("controller pid %d: CPU %v in the token phase, RSS %d MiB\n", c.PID, c.CPU, c.RSS>>20)
	}
	if len(rep.Controllers) > 0 {
		fmt.Printf("memory per connected device: %d KiB\n", rep.MemoryPerDevice()>>10)
	}
	fmt.Printf("errors: %d calls, %d streams %q\n", rep.CallErrors, rep.StreamErrors, rep.FirstErrors)
	return nil
}

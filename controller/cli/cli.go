// Package controllercli implements the postern-controller command line:
// serve runs a controller; apply, connector-token, relay-token and
// service-key call a running controller's admin API with the admin token.
package controllercli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"postern.dev/postern/controller"
	"postern.dev/postern/controller/export"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/version"
)

// ErrUsage is returned for bad command lines (exit status 2).
var ErrUsage = errors.New("usage")

const usage = `usage:
  postern-controller serve --data DIR --listen ADDR --public-url URL [--advertise-url URL] [--log-level LEVEL]
                           [--database postgres://USER@HOST:PORT/DB]   (several replicas; default SQLite in DIR)
                           [--oidc-issuer URL --oidc-client-id ID --oidc-client-secret-file FILE
                            [--oidc-groups-claim CLAIM] [--oidc-scopes LIST] [--oidc-redirect-url URL]...
                            [--oidc-config FILE (default DATA/oidc.yaml)] ...]   (single sign-on, docs/sso.md)
                           [--metrics ADDR] [--export FILE (default DATA/export.yaml)]   (docs/events.md)
  postern-controller apply --url URL --ca FILE --token-file FILE -f network.yaml [--dry-run]
  postern-controller connector-token --url URL --ca FILE --token-file FILE [--ttl 24h] NAME
  postern-controller relay-token     --url URL --ca FILE --token-file FILE [--ttl 24h] NAME
  postern-controller service-key     --url URL --ca FILE --token-file FILE NAME   (prints a key file)
  postern-controller requests list|approve|deny --url URL --ca FILE --token-file FILE [ID]
                           [--for DURATION] [--reason TEXT] [--json]   (just-in-time access, docs/access.md)
  postern-controller admins add NAME --role owner|admin|approver|auditor [--password-file FILE|-]
                           | list [--json] | remove NAME | token NAME [--role R] [--ttl 2160h] [--name TEXT]
                           | revoke-token ID   (--url URL --ca FILE --token-file FILE; docs/console.md)
  postern-controller version
`

// Main runs the command line and returns the process exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "apply":
		err = apply(args[1:], stdout, stderr)
	case "connector-token":
		err = mint(args[1:], "connector", stdout, stderr)
	case "relay-token":
		err = mint(args[1:], "relay", stdout, stderr)
	case "service-key":
		err = serviceKey(args[1:], stdout, stderr)
	case "requests":
		err = requests(args[1:], stdout, stderr)
	case "admins":
		err = admins(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "postern-controller", version.Version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "postern-controller: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "postern-controller:", err)
		if errors.Is(err, ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}

// parseInterleaved parses flags that may come before or after positional
// arguments and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data directory (created if missing)")
	listen := fs.String("listen", ":8443", "HTTPS listen address")
	public := fs.String("public-url", "", "URL clients, connectors and relays use to reach this controller (https://HOST:PORT)")
	advertise := fs.String("advertise-url", "", "with several replicas: this replica's own URL (https://HOST:PORT); parts learn it and fail over to it")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	database := fs.String("database", os.Getenv("POSTERN_DATABASE_URL"),
		"PostgreSQL URL (postgres://USER@HOST:PORT/DB) shared by several replicas; default $POSTERN_DATABASE_URL, else SQLite in DATA. Keep the password out of the command line: PGPASSWORD or ~/.pgpass")
	tokenTTL := fs.Duration("token-ttl", ctoken.DefaultTTL, "Connection Token lifetime (10s to 1h); clients refresh tokens before they expire")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics, /healthz, /readyz and /debug/pprof/ without authentication on this address (e.g. 127.0.0.1:9464); /metrics is always on the API listener for the admin token")
	rateLimit := fs.Float64("rate-limit", 100, "API requests per second per client IP (sign-ins have their own throttle); raise it when many clients share one address (a NAT gateway, a load generator)")
	rateBurst := fs.Int("rate-burst", 400, "burst of API requests per client IP above --rate-limit")
	exportFile := fs.String("export", "", "event export configuration (default DATA/export.yaml when that file exists; see docs/events.md)")
	oidcFlags := addOIDCFlags(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: serve takes no arguments, got %q", ErrUsage, pos)
	}
	if *data == "" || *public == "" {
		return fmt.Errorf("%w: serve needs --data and --public-url", ErrUsage)
	}
	if *database != "" && !strings.HasPrefix(*database, "postgres://") && !strings.HasPrefix(*database, "postgresql://") {
		return fmt.Errorf("%w: --database: want a postgres:// or postgresql:// URL", ErrUsage)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("%w: --log-level: %v", ErrUsage, err)
	}
	if *rateLimit <= 0 || *rateBurst <= 0 {
		return fmt.Errorf("%w: --rate-limit and --rate-burst must be positive", ErrUsage)
	}
	if *tokenTTL < 10*time.Second || *tokenTTL > time.Hour {
		return fmt.Errorf("%w: --token-ttl %s: want between 10s and 1h", ErrUsage, *tokenTTL)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	oc, err := oidcFlags.config(fs, *data)
	if err != nil {
		return err
	}
	ex, err := exportConfig(*exportFile, *data)
	if err != nil {
		return err
	}
	c, err := controller.Open(controller.Config{DataDir: *data, DatabaseURL: *database, PublicURL: *public, AdvertiseURL: *advertise, RateLimit: *rateLimit, RateBurst: *rateBurst, Logger: log, OIDC: oc, TokenTTL: *tokenTTL, Export: ex})
	if err != nil {
		return err
	}
	defer c.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *metricsAddr != "" {
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--metrics: listen on %s: %w", *metricsAddr, err)
		}
		ms := &http.Server{Handler: c.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ms.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener", "err", err)
			}
		}()
		defer ms.Close()
		log.Info("metrics", "listen", mln.Addr().String())
	}
	log.Info("serving", "listen", ln.Addr().String(), "public_url", *public, "ca", *data+"/ca.pem",
		"ca_sha256", c.CAFingerprint(), "admin_token_file", *data+"/admin-token", "version", version.Version)
	return c.Serve(ctx, ln)
}

// exportConfig loads the event export configuration: the --export file
// (which must exist) or DATA/export.yaml when present.
func exportConfig(file, data string) (*export.Config, error) {
	if file == "" {
		return export.LoadConfig(filepath.Join(data, "export.yaml"))
	}
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("%w: --export: %v", ErrUsage, err)
	}
	return export.LoadConfig(file)
}

// adminClient calls a controller's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func adminFlags(fs *flag.FlagSet) (u, ca, tokenFile *string) {
	u = fs.String("url", os.Getenv("POSTERN_CONTROLLER_URL"), "controller URL (https://HOST:PORT)")
	ca = fs.String("ca", "", "deployment CA certificate (DATA/ca.pem); default: system roots")
	tokenFile = fs.String("token-file", "", "file holding the admin token (DATA/admin-token)")
	return
}

func newAdminClient(u, caFile, tokenFile string) (*adminClient, error) {
	if u == "" || tokenFile == "" {
		return nil, fmt.Errorf("%w: --url and --token-file are required", ErrUsage)
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" || pu.Host == "" {
		return nil, fmt.Errorf("%w: --url %q must be https://HOST[:PORT]", ErrUsage, u)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read admin token: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	if token == "" || len(token) > 512 || strings.ContainsAny(token, " \t\r\n") {
		return nil, fmt.Errorf("%s does not hold an admin token (one line, DATA/admin-token)", tokenFile)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("%s: no PEM certificate found", caFile)
		}
		tlsCfg.RootCAs = pool
	}
	return &adminClient{
		base:  strings.TrimSuffix(u, "/"),
		token: token,
		http:  &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}},
	}, nil
}

func (a *adminClient) do(method, path, contentType string, body []byte, out any) error {
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("controller refused (%d): %s", resp.StatusCode, e.Error)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return nil
}

func apply(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	u, ca, tf := adminFlags(fs)
	file := fs.String("f", "", "network.yaml to apply (- for stdin)")
	dry := fs.Bool("dry-run", false, "only print the plan")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *file == "" {
		return fmt.Errorf("%w: apply needs -f FILE and no other arguments", ErrUsage)
	}
	var data []byte
	if *file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", *file, err)
	}
	a, err := newAdminClient(*u, *ca, *tf)
	if err != nil {
		return err
	}
	path := "/api/v1/apply"
	if *dry {
		path += "?dry_run=true"
	}
	var plan controller.Plan
	if err := a.do(http.MethodPost, path, "application/yaml", data, &plan); err != nil {
		return fmt.Errorf("apply %s: %w", *file, err)
	}
	fmt.Fprint(stdout, plan.String())
	return nil
}

func mint(args []string, kind string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(kind+"-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	u, ca, tf := adminFlags(fs)
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token stays valid")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: %s-token needs exactly one NAME", ErrUsage, kind)
	}
	if *ttl <= 0 {
		return fmt.Errorf("%w: --ttl must be positive", ErrUsage)
	}
	a, err := newAdminClient(*u, *ca, *tf)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(controller.MintRequest{Name: pos[0], TTLSeconds: int(ttl.Seconds())})
	var resp controller.MintResponse
	if err := a.do(http.MethodPost, "/api/v1/"+kind+"-tokens", "application/json", body, &resp); err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Token)
	return nil
}

func serviceKey(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("service-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	u, ca, tf := adminFlags(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: service-key needs exactly one service account NAME", ErrUsage)
	}
	a, err := newAdminClient(*u, *ca, *tf)
	if err != nil {
		return err
	}
	var key json.RawMessage
	if err := a.do(http.MethodPost, "/api/v1/service-accounts/"+url.PathEscape(pos[0])+"/keys", "", nil, &key); err != nil {
		return err
	}
	var pretty bytes.Buffer
	json.Indent(&pretty, key, "", "  ")
	fmt.Fprintln(stdout, pretty.String())
	return nil
}

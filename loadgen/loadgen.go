package loadgen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/controlapi"
)

// Config is one run.
type Config struct {
	// URL is the controller (several replicas: comma-separated; every
	// simulated part fails over between them like the real ones).
	URL        string
	Roots      *x509.CertPool
	AdminToken string

	Devices     int // simulated devices (default 1000)
	Connectors  int // simulated connectors (default 100)
	Concurrency int // sign-ins and token requests in flight (default 64)
	// PerAccount devices share one service account (default 100): a
	// company's devices sign in as far fewer principals.
	PerAccount int
	// TokenPhase is how long Connection Tokens are requested flat out
	// (default 10 s).
	TokenPhase time.Duration
	// PIDs of the controller processes, for CPU and memory (Linux).
	PIDs []int
	// DBStats, when set, reads the database's server-side counters (with
	// PostgreSQL: connections to it and transactions committed so far);
	// the report gives them during the sign-ins and the token phase.
	DBStats func(ctx context.Context) (conns int, xacts int64, err error)
	// OnConnected, when set, is called once every part is connected and
	// has its first policy, just before the token phase (profiles).
	OnConnected func()
	Log         *slog.Logger
}

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Devices, 1000)
	def(&c.Connectors, 100)
	def(&c.Concurrency, 64)
	def(&c.PerAccount, 100)
	if c.TokenPhase <= 0 {
		c.TokenPhase = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Report is what one run measured.
type Report struct {
	Devices, Connectors int

	SignIns       Rate        `json:"sign_ins"`
	SignInLatency Percentiles `json:"sign_in_latency"`
	Tokens        Rate        `json:"tokens"`
	TokenLatency  Percentiles `json:"token_latency"`
	Enrollments   Rate        `json:"enrollments"`
	Heartbeats    Rate        `json:"heartbeats"` // during the token phase
	ToDevices     Percentiles `json:"policy_to_devices"`
	ToConnectors  Percentiles `json:"policy_to_connectors"`
	StreamErrors  int64       `json:"stream_errors"`
	CallErrors    int64       `json:"call_errors"`
	// Controllers: CPU during the token phase, memory with every part
	// connected; Baseline: memory before any part connected.
	Controllers []ProcSample `json:"controllers,omitempty"`
	// Database (Config.DBStats): connections at the end of the token phase,
	// transactions per second during the sign-ins and the token phase.
	DBConns          int           `json:"db_connections,omitempty"`
	DBTxPerSecSignIn float64       `json:"db_tx_per_sec_sign_in,omitempty"`
	DBTxPerSecTokens float64       `json:"db_tx_per_sec_tokens,omitempty"`
	Baseline         []ProcSample  `json:"baseline,omitempty"`
	Elapsed          time.Duration `json:"elapsed"`
	FirstErrors      []string      `json:"first_errors,omitempty"`
}

// Rate is a count over a duration.
type Rate struct {
	N        int           `json:"n"`
	Duration time.Duration `json:"duration"`
}

// MemoryPerDevice is the controllers' resident memory growth from the
// baseline, per connected device (connectors counted as devices).
func (r *Report) MemoryPerDevice() int64 {
	var grown int64
	for i := range r.Controllers {
		if i < len(r.Baseline) {
			grown += r.Controllers[i].RSS - r.Baseline[i].RSS
		}
	}
	return grown / int64(max(1, r.Devices+r.Connectors))
}

// CPU is the controllers' CPU time during the token phase.
func (r *Report) CPU() time.Duration {
	var d time.Duration
	for _, s := range r.Controllers {
		d += s.CPU
	}
	return d
}

// PerSecond is N per second.
func (r Rate) PerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.N) / r.Duration.Seconds()
}

// Percentiles of a latency sample.
type Percentiles struct {
	N             int
	P50, P99, Max time.Duration
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Percentiles{N: len(ds), P50: at(0.50), P99: at(0.99), Max: ds[len(ds)-1]}
}

func (p Percentiles) String() string {
	return fmt.Sprintf("p50 %v p99 %v max %v (n=%d)", p.P50.Round(time.Millisecond), p.P99.Round(time.Millisecond), p.Max.Round(time.Millisecond), p.N)
}

// run is the shared state of one run.
type run struct {
	cfg   Config
	admin *controlapi.Client
	errs  errorLog

	// heartbeatsSent counts heartbeats the controller accepted (for the
	// report); a field, so two runs in one process keep their own counts.
	heartbeatsSent atomic.Int64

	// Policy streams: the first revision each party received, and, for the
	// policy-change measurement, when it first received a revision after
	// watchAfter.
	mu         sync.Mutex
	cond       *sync.Cond
	ready      map[string]int64
	maxRev     int64
	watchAfter int64
	after      map[string][]revAt
}

type errorLog struct {
	mu    sync.Mutex
	calls atomic.Int64
	strs  atomic.Int64
	first []string
}

func (e *errorLog) add(counter *atomic.Int64, what string, err error) {
	counter.Add(1)
	e.mu.Lock()
	if len(e.first) < 10 {
		e.first = append(e.first, what+": "+err.Error())
	}
	e.mu.Unlock()
}

// Run sets up the simulated company (service accounts, a remote network
// with Connectors connectors, one resource), brings every part online, and
// measures. It leaves the configuration applied.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	start := time.Now()
	admin, err := controlapi.NewClient(controlapi.ClientConfig{URL: cfg.URL, Roots: cfg.Roots, Token: cfg.AdminToken, CallTimeout: time.Minute})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	r := &run{cfg: cfg, admin: admin, after: map[string][]revAt{}, ready: map[string]int64{}}
	r.cond = sync.NewCond(&r.mu)
	rep := &Report{Devices: cfg.Devices, Connectors: cfg.Connectors}

	accounts := (cfg.Devices + cfg.PerAccount - 1) / cfg.PerAccount
	if _, err := r.apply(ctx, accounts, 0); err != nil {
		return nil, err
	}
	cfg.Log.Info("configuration applied", "accounts", accounts, "connectors", cfg.Connectors)

	rep.Baseline = sampleAll(cfg.PIDs)
	partsCtx, stopParts := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopParts(); wg.Wait() }()

	cons, err := r.startConnectors(partsCtx, &wg, rep)
	if err != nil {
		return nil, err
	}
	_, x0 := r.dbStats(ctx)
	devs, err := r.startDevices(partsCtx, &wg, accounts, rep)
	if err != nil {
		return nil, err
	}
	_, x1 := r.dbStats(ctx)
	rep.DBTxPerSecSignIn = perSecond(x1-x0, rep.SignIns.Duration)
	if err := r.waitStreams(ctx, cons, devs); err != nil {
		return nil, err
	}
	if cfg.OnConnected != nil {
		cfg.OnConnected()
	}
	before := sampleAll(cfg.PIDs)
	_, x2 := r.dbStats(ctx)
	r.tokenPhase(ctx, devs, cons, rep)
	after := sampleAll(cfg.PIDs)
	conns, x3 := r.dbStats(ctx)
	rep.DBConns, rep.DBTxPerSecTokens = conns, perSecond(x3-x2, rep.Tokens.Duration)
	rep.Controllers = diffSamples(before, after)

	if err := r.policyChange(ctx, accounts, cons, devs, rep); err != nil {
		return nil, err
	}
	rep.StreamErrors, rep.CallErrors = r.errs.strs.Load(), r.errs.calls.Load()
	rep.FirstErrors = r.errs.first
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// spec renders the company as sites: the connectors in pairs, one remote
// network per pair (site), one resource per site; service account i is in
// group i%sites and reaches its site's resource and a shared one at site 0;
// every resource's port changes with gen (the policy change every device and
// every connector sees). A
// device's snapshot then lists the connectors of two sites, as a real
// employee's does, not every connector of the company.
func spec(accounts, connectors, gen int) string {
	sites := max(1, connectors/2)
	var b strings.Builder
	b.WriteString("remote_networks:\n")
	for s := 0; s < sites; s++ {
		fmt.Fprintf(&b, "  - name: site%04d\n    connectors:\n", s)
		for c := s; c < connectors; c += sites {
			fmt.Fprintf(&b, "      - scale-c%04d\n", c)
		}
	}
	groups := min(sites, accounts)
	b.WriteString("groups:\n")
	for g := 0; g < groups; g++ {
		fmt.Fprintf(&b, "  - name: scale-g%04d\n    users: []\n", g)
	}
	b.WriteString("service_accounts:\n")
	for i := 0; i < accounts; i++ {
		fmt.Fprintf(&b, "  - name: scale-sa%04d\n    groups: [scale-g%04d]\n", i, i%groups)
	}
	b.WriteString("resources:\n")
	all := make([]string, groups)
	for g := range all {
		all[g] = fmt.Sprintf("scale-g%04d", g)
	}
	fmt.Fprintf(&b, "  - name: scale-shared\n    address: shared.scale.internal\n    network: site0000\n    ports: [tcp/%d]\n    groups: [%s]\n", 8000+gen, strings.Join(all, ", "))
	for s := 0; s < sites; s++ {
		fmt.Fprintf(&b, "  - name: scale-app%04d\n    address: app%04d.scale.internal\n    network: site%04d\n    ports: [tcp/%d]\n    groups: [scale-g%04d]\n", s, s, s, 9000+gen, s%groups)
	}
	return b.String()
}

// apply sends the company's spec (generation gen) to the admin API and
// returns the revision it committed.
func (r *run) apply(ctx context.Context, accounts, gen int) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.admin.URL()+"/api/v1/apply", strings.NewReader(spec(accounts, r.cfg.Connectors, gen)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+r.cfg.AdminToken)
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := r.yamlClient().Do(req)
	if err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	defer drain(resp.Body)
	var plan struct {
		Revision int64 `json:"revision"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("apply: HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&plan); err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	if plan.Revision == 0 {
		return 0, errNoRevision
	}
	return plan.Revision, nil
}

// yamlClient is an HTTPS client pinned to the deployment CA (the admin
// API's apply takes YAML, which controlapi.Client does not send).
func (r *run) yamlClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: r.cfg.Roots}}}
}

var errNoRevision = errors.New("apply answered without a revision")

func drain(rc io.ReadCloser) { _, _ = io.Copy(io.Discard, rc); rc.Close() }

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d) }

// dbStats reads Config.DBStats (zero when unset or failing).
func (r *run) dbStats(ctx context.Context) (int, int64) {
	if r.cfg.DBStats == nil {
		return 0, 0
	}
	c, x, err := r.cfg.DBStats(ctx)
	if err != nil {
		r.errs.add(&r.errs.calls, "database statistics", err)
		return 0, 0
	}
	return c, x
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/pki"
	"postern.dev/postern/version"
)

// State directory files.
const (
	fileIdentity = "relay.json"
	fileKey      = "relay-key.pem"
	fileCert     = "relay-cert.pem"
	fileCA       = "ca.pem"
	fileTLSKey   = "tls-key.pem"
	fileTLSCert  = "tls-cert.pem"
)

// Options are the postern-relay command line.
type Options struct {
	Token     string // enrollment token; only needed on the first start
	StateDir  string
	ListenUDP string
	ListenTLS string
	PublicIP  net.IP
	// RelayIP is the local address relayed sockets bind to (--relay-ip);
	// nil: see ResolveRelayIP.
	RelayIP     net.IP
	MetricsAddr string
	Logger      *slog.Logger
	// AllowSelfPeers lets allocations relay to loopback and to this host's
	// own addresses (tests that run clients, connectors and the relay on one
	// host only; never in production).
	AllowSelfPeers bool
}

type identity struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	ControllerURL string `json:"controller_url"`
}

// enrolled is a relay's credential with the controller.
type enrolled struct {
	id   identity
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	ca   *x509.Certificate
	dir  string
}

// Run enrolls (first start) or loads the state directory, registers with the
// controller, serves until ctx ends, and keeps registering every interval.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StateDir == "" {
		return fmt.Errorf("%w: no state directory", ErrBadConfig)
	}
	if o.PublicIP == nil {
		return fmt.Errorf("%w: --public-ip is required", ErrBadConfig)
	}
	relayIP, err := ResolveRelayIP(o.ListenUDP, o.PublicIP, o.RelayIP)
	if err != nil {
		return err
	}
	// Bind before anything else, so an address this host cannot bind fails
	// at once rather than after enrollment.
	udp, err := net.ListenPacket("udp", o.ListenUDP)
	if err != nil {
		return fmt.Errorf("%w: --listen-udp %s: cannot bind: %v", ErrBadConfig, o.ListenUDP, err)
	}
	tcp, err := net.Listen("tcp", o.ListenTLS)
	if err != nil {
		udp.Close()
		return fmt.Errorf("%w: --listen-tls %s: cannot bind: %v", ErrBadConfig, o.ListenTLS, err)
	}
	started := false
	defer func() {
		if !started {
			udp.Close()
			tcp.Close()
		}
	}()
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	e, err := loadOrEnroll(ctx, o)
	if err != nil {
		return err
	}
	tlsCert, err := loadOrCreateTLSCert(o.StateDir)
	if err != nil {
		return err
	}
	cc, err := newControllerClient(e)
	if err != nil {
		return err
	}
	defer cc.api.Close()
	udpPort := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
	tlsPort := strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port)
	reg := controlapi.RelayRegister{
		PublicIP:      o.PublicIP.String(),
		UDPAddr:       net.JoinHostPort(o.PublicIP.String(), udpPort),
		TLSAddr:       net.JoinHostPort(o.PublicIP.String(), tlsPort),
		Version:       version.Version,
		TLSCertSHA256: pki.CertDigest(tlsCert.Certificate[0]),
	}
	// The realm comes with the first registration: retry with backoff.
	var resp controlapi.RelayRegisterResponse
	for backoff := time.Second; ; backoff = min(backoff*2, 30*time.Second) {
		resp, err = cc.register(ctx, reg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil // stopped (SIGTERM) while registering: a shutdown, not an error
		}
		o.Logger.Warn("register with controller", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
	r, err := New(Config{
		ListenUDP: o.ListenUDP, ListenTLS: o.ListenTLS, PublicIP: o.PublicIP, RelayIP: relayIP,
		UDPConn: udp, TLSListener: tcp,
		Realm: resp.Realm, TLSCert: tlsCert, CA: e.ca, Logger: o.Logger,
		AllowLoopbackPeers: o.AllowSelfPeers,
	})
	if err != nil {
		return err
	}
	if err := r.SetCredentials(resp.TURNSecret, resp.Issuer, resp.JWKS); err != nil {
		return err
	}
	if resp.Policy != nil {
		r.SetPolicy(*resp.Policy)
	}
	if err := r.Start(); err != nil {
		return err
	}
	started = true
	defer r.Close()
	go cc.followPolicy(ctx, r, o.Logger)
	if o.MetricsAddr != "" {
		ms := &http.Server{Addr: o.MetricsAddr, Handler: r.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ms.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Logger.Error("metrics listener", "err", err)
			}
		}()
		defer ms.Close()
	}
	o.Logger.Info("relay registered", "id", resp.ID, "realm", resp.Realm)
	interval := time.Duration(resp.IntervalSeconds) * time.Second
	if interval <= 0 {
		interval = controlapi.HeartbeatInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		reg.Stats = r.Stats()
		resp, err := cc.register(ctx, reg)
		if err != nil {
			o.Logger.Warn("relay heartbeat", "err", err)
			continue
		}
		if err := r.SetCredentials(resp.TURNSecret, resp.Issuer, resp.JWKS); err != nil {
			o.Logger.Warn("relay heartbeat credentials", "err", err)
		}
		if resp.Policy != nil {
			r.SetPolicy(*resp.Policy)
		}
		if err := cc.maybeRenew(ctx); err != nil {
			o.Logger.Warn("renew relay credential", "err", err)
		}
	}
}

func loadOrEnroll(ctx context.Context, o Options) (*enrolled, error) {
	e := &enrolled{dir: o.StateDir}
	if b, err := os.ReadFile(filepath.Join(o.StateDir, fileIdentity)); err == nil {
		if err := json.Unmarshal(b, &e.id); err != nil {
			return nil, fmt.Errorf("read %s: %w", fileIdentity, err)
		}
		if err := e.loadFiles(); err != nil {
			return nil, err
		}
		return e, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if o.Token == "" {
		return nil, ErrNotEnrolled
	}
	tok, err := controlapi.ParseEnrollmentToken(o.Token)
	if err != nil {
		return nil, err
	}
	if tok.Kind != "relay" {
		return nil, fmt.Errorf("%w: this is a %s token, not a relay token", controlapi.ErrBadEnrollmentToken, tok.Kind)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate relay key: %w", err)
	}
	host, _ := os.Hostname()
	resp, ca, err := tok.Enroll(ctx, controlapi.PathEnrollRelay, key.Public(), host, 15*time.Second)
	if errors.Is(err, controlapi.ErrBadEnrollmentToken) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: enroll relay: %w", ErrControllerCall, err)
	}
	cert, err := pki.ParseCertPEM([]byte(resp.CertificatePEM))
	if err != nil {
		return nil, fmt.Errorf("enroll relay: certificate: %w", err)
	}
	e.id = identity{ID: resp.ID, Name: resp.Name, ControllerURL: tok.ControllerURL}
	e.key, e.cert, e.ca = key, cert, ca
	if err := e.save(); err != nil {
		return nil, err
	}
	o.Logger.Info("relay enrolled", "id", resp.ID, "name", resp.Name)
	return e, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func (e *enrolled) loadFiles() error {
	kb, err := os.ReadFile(filepath.Join(e.dir, fileKey))
	if err != nil {
		return fmt.Errorf("read relay key: %w", err)
	}
	k, err := pki.ParseKeyPEM(kb)
	if err != nil {
		return fmt.Errorf("relay key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("relay key: not ECDSA")
	}
	e.key = ek
	cb, err := os.ReadFile(filepath.Join(e.dir, fileCert))
	if err != nil {
		return fmt.Errorf("read relay certificate: %w", err)
	}
	if e.cert, err = pki.ParseCertPEM(cb); err != nil {
		return fmt.Errorf("relay certificate: %w", err)
	}
	ab, err := os.ReadFile(filepath.Join(e.dir, fileCA))
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	if e.ca, err = pki.ParseCertPEM(ab); err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	return nil
}

// save writes key, certificate and CA before the identity file, so a crash
// never leaves an identity without its credential.
func (e *enrolled) save() error {
	kp, err := pki.EncodeKeyPEM(e.key)
	if err != nil {
		return err
	}
	idb, _ := json.MarshalIndent(e.id, "", "  ")
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{fileKey, kp, 0o600},
		{fileCert, pki.EncodeCertPEM(e.cert), 0o644},
		{fileCA, pki.EncodeCertPEM(e.ca), 0o644},
		{fileIdentity, idb, 0o600},
	} {
		if err := atomicfile.Write(filepath.Join(e.dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save %s: %w", f.name, err)
		}
	}
	return nil
}

// loadOrCreateTLSCert returns the TLS listener's self-signed certificate,
// creating it on first start.
func loadOrCreateTLSCert(dir string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, fileTLSCert), filepath.Join(dir, fileTLSKey))
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("load TLS certificate: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err = pki.SelfSigned(key, "postern-relay", 10*365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, err
	}
	kp, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(filepath.Join(dir, fileTLSKey), kp, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("save TLS key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, fileTLSCert), pki.EncodeCertPEM(c.Leaf), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("save TLS certificate: %w", err)
	}
	return c, nil
}

// controllerClient calls the controller with the relay's mTLS credential.
type controllerClient struct {
	e   *enrolled
	api *controlapi.Client
}

func newControllerClient(e *enrolled) (*controllerClient, error) {
	cc := &controllerClient{e: e}
	api, err := controlapi.NewClient(controlapi.ClientConfig{
		URL:   e.id.ControllerURL,
		Roots: pki.CAPool(e.ca),
		Certificate: func() (*tls.Certificate, error) {
			return &tls.Certificate{Certificate: [][]byte{cc.e.cert.Raw}, PrivateKey: cc.e.key, Leaf: cc.e.cert}, nil
		},
		// Keepalives come every 15 s: a policy stream silent for longer is dead.
		StreamIdleTimeout: controlapi.DefaultStreamIdleTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("stored controller URL: %w", err)
	}
	cc.api = api
	return cc, nil
}

// call is one controller request; its errors wrap ErrControllerCall.
func (cc *controllerClient) call(ctx context.Context, path string, in, out any) error {
	if err := cc.api.Call(ctx, http.MethodPost, path, in, out); err != nil {
		return fmt.Errorf("%w: %w", ErrControllerCall, err)
	}
	return nil
}

func (cc *controllerClient) register(ctx context.Context, reg controlapi.RelayRegister) (controlapi.RelayRegisterResponse, error) {
	var resp controlapi.RelayRegisterResponse
	err := cc.call(ctx, controlapi.PathRelayRegister, reg, &resp)
	return resp, err
}

// maybeRenew renews the credential once less than a third of its lifetime is left.
func (cc *controllerClient) maybeRenew(ctx context.Context) error {
	c := cc.e.cert
	if time.Until(c.NotAfter) > c.NotAfter.Sub(c.NotBefore)/3 {
		return nil
	}
	var resp controlapi.EnrollResponse
	if err := cc.call(ctx, controlapi.PathRenew, controlapi.RenewRequest{}, &resp); err != nil {
		return err
	}
	cert, err := pki.ParseCertPEM([]byte(resp.CertificatePEM))
	if err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	cc.e.cert = cert
	return cc.e.save()
}

// Package export sends the controller's audit log and network (flow) events
// to outside systems: JSON lines on stdout or a rotated file, syslog
// (RFC 5424 over TCP or TLS with octet-counting framing, RFC 6587) and an
// HTTPS webhook signed with HMAC-SHA256. Delivery is at-least-once: every
// sink keeps its own cursor in DATA/export/NAME.cursor, advanced only after
// the sink accepted a batch, so a restart or an unreachable receiver loses
// nothing; events that may have reached the receiver before are re-sent with
// "redelivery": true and keep their stable "id" for deduplication.
// The event schema is documented in docs/events.md.
package export

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("invalid export configuration")

// Streams an event can come from.
const (
	StreamAudit   = "audit"
	StreamNetwork = "network"
)

// Sink types.
const (
	TypeFile    = "file"
	TypeSyslog  = "syslog"
	TypeWebhook = "webhook"
)

// Config is DATA/export.yaml.
type Config struct {
	// Poll is how often sinks look for new events once caught up; default 1s.
	Poll Duration `yaml:"poll"`
	// Batch is the most events read from each stream per send; default 500.
	Batch int          `yaml:"batch"`
	Sinks []SinkConfig `yaml:"sinks"`
}

// SinkConfig is one destination.
type SinkConfig struct {
	Name   string   `yaml:"name"`   // [a-z0-9_-]{1,64}; names the cursor file
	Type   string   `yaml:"type"`   // file, syslog or webhook
	Events []string `yaml:"events"` // audit and/or network; default both

	// file
	Path       string `yaml:"path"`        // "-" for stdout
	MaxSizeMB  int    `yaml:"max_size_mb"` // rotate when the file would pass this; default 100
	MaxBackups int    `yaml:"max_backups"` // rotated files kept (PATH.1 newest); default 5

	// syslog
	Address    string `yaml:"address"` // host:port
	TLS        bool   `yaml:"tls"`
	CAFile     string `yaml:"ca_file"`     // syslog TLS and webhook: PEM roots; default system roots
	ServerName string `yaml:"server_name"` // syslog TLS: name to verify; default the address's host
	Facility   string `yaml:"facility"`    // default local0
	Hostname   string `yaml:"hostname"`    // HOSTNAME field; default os.Hostname

	// webhook
	URL        string   `yaml:"url"`         // https://...
	SecretFile string   `yaml:"secret_file"` // HMAC-SHA256 key (file content, trimmed)
	Timeout    Duration `yaml:"timeout"`     // per request; default 10s

	// retries (every type)
	RetryMin Duration `yaml:"retry_min"` // first backoff; default 500ms
	RetryMax Duration `yaml:"retry_max"` // backoff ceiling; default 60s
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("want a duration such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"10s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

var nameRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// LoadConfig reads and validates an export.yaml. A missing file is
// (nil, nil): nothing is exported.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes (unknown fields refused) and validates a config,
// filling defaults. Errors name the offending field.
func ParseConfig(b []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate checks every field and fills defaults.
func (c *Config) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrConfig}, a...)...) }
	if c.Poll == 0 {
		c.Poll = Duration(time.Second)
	}
	if c.Poll < Duration(10*time.Millisecond) || c.Poll > Duration(time.Hour) {
		return bad("poll: %s: want between 10ms and 1h", time.Duration(c.Poll))
	}
	if c.Batch == 0 {
		c.Batch = 500
	}
	if c.Batch < 1 || c.Batch > 10000 {
		return bad("batch: %d: want between 1 and 10000", c.Batch)
	}
	if len(c.Sinks) == 0 {
		return bad("sinks: at least one sink is required")
	}
	seen := map[string]bool{}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		where := fmt.Sprintf("sinks[%d]", i)
		if !nameRE.MatchString(s.Name) {
			return bad("%s.name: %q: want 1 to 64 of a-z, 0-9, _ and -", where, s.Name)
		}
		where = fmt.Sprintf("sinks[%d] (%s)", i, s.Name)
		if seen[s.Name] {
			return bad("%s.name: used by another sink", where)
		}
		seen[s.Name] = true
		if err := s.validate(); err != nil {
			return bad("%s.%v", where, err)
		}
	}
	return nil
}

func (s *SinkConfig) validate() error {
	if len(s.Events) == 0 {
		s.Events = []string{StreamAudit, StreamNetwork}
	}
	for _, e := range s.Events {
		if e != StreamAudit && e != StreamNetwork {
			return fmt.Errorf("events: %q: want audit or network", e)
		}
	}
	if s.RetryMin == 0 {
		s.RetryMin = Duration(500 * time.Millisecond)
	}
	if s.RetryMax == 0 {
		s.RetryMax = Duration(time.Minute)
	}
	if s.RetryMin < Duration(time.Millisecond) || s.RetryMax < s.RetryMin {
		return fmt.Errorf("retry_min/retry_max: %s/%s: want 1ms <= retry_min <= retry_max",
			time.Duration(s.RetryMin), time.Duration(s.RetryMax))
	}
	// Fields of other sink types are refused rather than ignored.
	set := map[string]bool{
		"path": s.Path != "", "max_size_mb": s.MaxSizeMB != 0, "max_backups": s.MaxBackups != 0,
		"address": s.Address != "", "tls": s.TLS, "server_name": s.ServerName != "", "facility": s.Facility != "", "hostname": s.Hostname != "",
		"url": s.URL != "", "secret_file": s.SecretFile != "", "timeout": s.Timeout != 0,
	}
	own := map[string][]string{
		TypeFile:    {"path", "max_size_mb", "max_backups"},
		TypeSyslog:  {"address", "tls", "server_name", "facility", "hostname"},
		TypeWebhook: {"url", "secret_file", "timeout"},
	}
	fields, ok := own[s.Type]
	if !ok {
		return fmt.Errorf("type: %q: want file, syslog or webhook", s.Type)
	}
	for _, f := range fields {
		delete(set, f)
	}
	for f, v := range set {
		if v {
			return fmt.Errorf("%s: not a field of a %s sink", f, s.Type)
		}
	}
	switch s.Type {
	case TypeFile:
		if s.Path == "" {
			return errors.New("path: required (a file, or - for stdout)")
		}
		if s.CAFile != "" {
			return errors.New("ca_file: not a field of a file sink")
		}
		if s.MaxSizeMB == 0 {
			s.MaxSizeMB = 100
		}
		if s.MaxBackups == 0 {
			s.MaxBackups = 5
		}
		if s.MaxSizeMB < 1 || s.MaxBackups < 1 || s.MaxBackups > 1000 {
			return fmt.Errorf("max_size_mb/max_backups: %d/%d: want max_size_mb >= 1 and 1 <= max_backups <= 1000", s.MaxSizeMB, s.MaxBackups)
		}
	case TypeSyslog:
		host, port, err := net.SplitHostPort(s.Address)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("address: %q: want host:port", s.Address)
		}
		if !s.TLS && (s.CAFile != "" || s.ServerName != "") {
			return errors.New("ca_file/server_name: only with tls: true")
		}
		if s.Facility == "" {
			s.Facility = "local0"
		}
		if _, ok := facilities[s.Facility]; !ok {
			return fmt.Errorf("facility: %q: want a syslog facility name such as local0, auth or security", s.Facility)
		}
	case TypeWebhook:
		u, err := url.Parse(s.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("url: %q: want an https:// URL", s.URL)
		}
		if s.SecretFile == "" {
			return errors.New("secret_file: required (the HMAC-SHA256 key the receiver checks)")
		}
		if s.Timeout == 0 {
			s.Timeout = Duration(10 * time.Second)
		}
		if s.Timeout < 0 {
			return errors.New("timeout: must be positive")
		}
	}
	return nil
}

func (s *SinkConfig) wants(stream string) bool {
	for _, e := range s.Events {
		if e == stream {
			return true
		}
	}
	return false
}

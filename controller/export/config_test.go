package export

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
sinks:
  - name: siem
    type: syslog
    address: siem.example.com:6514
    tls: true
  - name: log
    type: file
    path: /var/log/postern/events.jsonl
    events: [network]
  - name: hook
    type: webhook
    url: https://hooks.example.com/postern
    secret_file: /etc/postern/hook-secret
    retry_max: 5m
`))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(cfg.Poll) != time.Second || cfg.Batch != 500 {
		t.Errorf("defaults: poll %v batch %d", time.Duration(cfg.Poll), cfg.Batch)
	}
	if s := cfg.Sinks[0]; s.Facility != "local0" || len(s.Events) != 2 {
		t.Errorf("syslog defaults: %+v", s)
	}
	if s := cfg.Sinks[1]; s.MaxSizeMB != 100 || s.MaxBackups != 5 || s.wants(StreamAudit) || !s.wants(StreamNetwork) {
		t.Errorf("file defaults: %+v", s)
	}
	if s := cfg.Sinks[2]; time.Duration(s.RetryMax) != 5*time.Minute || time.Duration(s.Timeout) != 10*time.Second {
		t.Errorf("webhook: %+v", s)
	}
}

func TestParseConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`sinks: []`, "sinks: at least one sink"},
		{`poll: 1ms
sinks: [{name: a, type: file, path: x}]`, "poll: 1ms"},
		{`sinks: [{name: A!, type: file, path: x}]`, `sinks[0].name: "A!"`},
		{`sinks: [{name: a, type: file, path: x}, {name: a, type: file, path: y}]`, "sinks[1] (a).name: used by another sink"},
		{`sinks: [{name: a, type: kafka}]`, `sinks[0] (a).type: "kafka"`},
		{`sinks: [{name: a, type: file}]`, "sinks[0] (a).path: required"},
		{`sinks: [{name: a, type: file, path: x, url: "https://h"}]`, "sinks[0] (a).url: not a field of a file sink"},
		{`sinks: [{name: a, type: file, path: x, events: [dns]}]`, `sinks[0] (a).events: "dns"`},
		{`sinks: [{name: a, type: syslog, address: nohost}]`, `sinks[0] (a).address: "nohost"`},
		{`sinks: [{name: a, type: syslog, address: "h:514", facility: mars}]`, `sinks[0] (a).facility: "mars"`},
		{`sinks: [{name: a, type: syslog, address: "h:514", ca_file: x}]`, "ca_file/server_name: only with tls: true"},
		{`sinks: [{name: a, type: webhook, url: "http://h/x", secret_file: s}]`, `sinks[0] (a).url: "http://h/x"`},
		{`sinks: [{name: a, type: webhook, url: "https://h/x"}]`, "sinks[0] (a).secret_file: required"},
		{`sinks: [{name: a, type: webhook, url: "https://h/x", secret_file: s, timeout: soon}]`, `"soon"`},
		{`sinks: [{name: a, type: file, path: x, retry_min: 1m, retry_max: 1s}]`, "retry_min/retry_max"},
		{`sinks: [{name: a, type: file, path: x, colour: red}]`, "field colour not found"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant an ErrConfig containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestLoadConfigMissingIsNil(t *testing.T) {
	cfg, err := LoadConfig(t.TempDir() + "/export.yaml")
	if cfg != nil || err != nil {
		t.Fatalf("got %v, %v", cfg, err)
	}
}

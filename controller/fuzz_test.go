package controller

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// FuzzParseSpec feeds arbitrary documents to the network.yaml parser and
// validator: nothing panics, and a document that validates validates again
// after a second parse (parsing is deterministic).
func FuzzParseSpec(f *testing.F) {
	addSpecSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, lines, err := ParseSpec(data)
		if err != nil {
			return
		}
		err1 := normalizeSpec(spec, lines)
		spec2, lines2, err := ParseSpec(data)
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		if err2 := normalizeSpec(spec2, lines2); (err1 == nil) != (err2 == nil) {
			t.Fatalf("validation not deterministic: %v / %v", err1, err2)
		}
	})
}

// FuzzApply applies arbitrary documents to a real controller (SQLite store):
// a document that is refused changes nothing (same revision, same objects);
// one that is applied, applied again, changes nothing more.
func FuzzApply(f *testing.F) {
	addSpecSeeds(f)
	c, err := Open(Config{DataDir: f.TempDir(), PublicURL: "https://127.0.0.1:8443", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if _, err := c.ApplyYAML(ctx, []byte(testYAML), false); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := c.model()
		dry, dryErr := c.ApplyYAML(ctx, data, true)
		if c.model().Rev != before.Rev {
			t.Fatalf("dry run changed the revision %d -> %d", before.Rev, c.model().Rev)
		}
		p, err := c.ApplyYAML(ctx, data, false)
		if (err == nil) != (dryErr == nil) {
			t.Fatalf("dry run said %v, apply said %v", dryErr, err)
		}
		if err != nil {
			after := c.model()
			if after.Rev != before.Rev || len(after.Resources) != len(before.Resources) || len(after.Users) != len(before.Users) {
				t.Fatalf("refused document changed the store: rev %d -> %d: %v", before.Rev, after.Rev, err)
			}
			return
		}
		if len(p.Changes) != len(dry.Changes) {
			t.Fatalf("dry run planned %d changes, apply made %d", len(dry.Changes), len(p.Changes))
		}
		again, err := c.ApplyYAML(ctx, data, false)
		if err != nil || !again.Empty() {
			t.Fatalf("second apply of the same document: %v\n%s", err, again)
		}
	})
}

func addSpecSeeds(f *testing.F) {
	for _, s := range []string{
		testYAML,
		"",
		"remote_networks: []\n",
		"resources:\n  - name: x\n    address: '*.'\n    network: corp\n",
		"remote_networks:\n  - name: corp\n    connectors: [a]\nresources:\n  - name: r\n    address: 10.0.0.0/8\n    network: corp\n    ports: [tcp/0]\n",
		"users:\n  - email: not-an-email\n",
		"a: &a [*a]\n",
		"groups:\n  - name: g\n    users: [x@example.com, x@example.com]\n",
		"remote_networks:\n  - name: corp\n    connectors: [a, a]\n",
		"\t- x",
		"resources: {name: x}\n",
	} {
		f.Add([]byte(s))
	}
}

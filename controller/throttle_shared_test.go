package controller

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controller/store"
	"postern.dev/postern/controller/store/pgtest"
)

// sharedThrottles returns two sign-in throttles, as two replicas have, on
// one PostgreSQL database, and the clock they share.
func sharedThrottles(t *testing.T) (*loginThrottle, *loginThrottle, *fakeClock, store.Throttle) {
	t.Helper()
	pg := pgtest.Start(t)
	ctx := context.Background()
	dbURL := pg.NewDatabase(t)
	clock := &fakeClock{t: time.UnixMilli(time.Now().UnixMilli())} // whole milliseconds, as stored
	var lts [2]*loginThrottle
	var th store.Throttle
	for i := range lts {
		st, err := store.OpenPostgres(ctx, dbURL, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		lts[i] = newLoginThrottle(clock.Now)
		lts[i].share(st, slog.New(slog.DiscardHandler))
		th = st
	}
	return lts[0], lts[1], clock, th
}

// TestSignInThrottleSharedByReplicas: failures counted on one replica delay
// attempts on the other exactly as on one controller; a sign-in on either
// clears the pair; concurrent failures are all counted; sweeping forgets
// old entries.
func TestSignInThrottleSharedByReplicas(t *testing.T) {
	a, b, clock, th := sharedThrottles(t)
	ctx := context.Background()
	att := loginAttempt{Account: "user:bob@example.com", IP: "198.51.100.7", Device: "jkt-attacker"}
	for i := 0; i < pairFreeFailures-1; i++ {
		[]*loginThrottle{a, b}[i%2].fail(ctx, att)
	}
	if v := b.check(ctx, att); v.wait != 0 {
		t.Fatalf("within the free failures: wait %s", v.wait)
	}
	a.fail(ctx, att)
	if v := b.check(ctx, att); v.wait != time.Second {
		t.Fatalf("failures on A and B, checked on B: wait %s, want 1s", v.wait)
	}
	b.success(ctx, att)
	if v := a.check(ctx, att); v.wait != 0 {
		t.Fatalf("after a sign-in on B, A still delays the pair by %s", v.wait)
	}

	// Concurrent failures from both replicas are all counted.
	spray := loginAttempt{Account: "user:carol@example.com", IP: "203.0.113.9", Device: "jkt-x"}
	var wg sync.WaitGroup
	for i := 0; i < accountCapFailures; i++ {
		wg.Add(1)
		go func(lt *loginThrottle) { defer wg.Done(); lt.fail(ctx, spray) }([]*loginThrottle{a, b}[i%2])
	}
	wg.Wait()
	es, err := th.ThrottleView(ctx, []string{"acct:user:carol@example.com"}, clock.Now().Add(-failMemory))
	if err != nil {
		t.Fatal(err)
	}
	if got := es["acct:user:carol@example.com"].Fails; got != accountCapFailures {
		t.Fatalf("%d concurrent failures on two replicas counted as %d", accountCapFailures, got)
	}
	other := loginAttempt{Account: "user:carol@example.com", IP: "192.0.2.50", Device: "jkt-new"}
	if v := a.check(ctx, other); !v.newDevices {
		t.Fatalf("account past the cap (failures spread over replicas) still takes new devices: %+v", v)
	}

	clock.Add(failMemory + time.Minute)
	if v := a.check(ctx, other); v.wait != 0 || v.newDevices {
		t.Fatalf("an hour later: %+v", v)
	}
	if err := a.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	es, err = th.ThrottleView(ctx, []string{"acct:user:carol@example.com", "ip:203.0.113.9"}, time.Time{})
	if err != nil || len(es) != 0 {
		t.Fatalf("after the sweep: %v %v", es, err)
	}
}

// TestPasswordGuessesSpreadOverReplicasAreThrottled: through the API, wrong
// passwords sent alternately to two replicas meet the same delay as on one.
func TestPasswordGuessesSpreadOverReplicasAreThrottled(t *testing.T) {
	a, b := newReplicaPair(t, nil)
	a.admin("POST", "/api/v1/apply", fastYAML(testYAML), 200)
	guess := func(e *testEnv) int {
		st, _ := e.call(nil, "POST", "/api/v1/client/login", "", map[string]string{
			"email": "alice@example.com", "password": "wrong", "device_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
		return st
	}
	for i := 0; i < pairFreeFailures; i++ {
		if st := guess([]*testEnv{a, b}[i%2]); st != 401 {
			t.Fatalf("guess %d: HTTP %d, want 401", i, st)
		}
	}
	for _, e := range []*testEnv{a, b} {
		if st := guess(e); st != 429 {
			t.Fatalf("after %d failures spread over two replicas: HTTP %d, want 429", pairFreeFailures, st)
		}
	}
}

// TestSecondFactorThrottleSharedByReplicas: wrong codes counted on two
// replicas lock the user's checks on both; a good code on one clears it.
func TestSecondFactorThrottleSharedByReplicas(t *testing.T) {
	_, _, clock, th := sharedThrottles(t)
	a := &mfaThrottle{shared: th, log: slog.New(slog.DiscardHandler)}
	b := &mfaThrottle{shared: th, log: slog.New(slog.DiscardHandler)}
	now := clock.Now()
	for i := 0; i < mfaMaxFailures; i++ {
		if ok, _ := []*mfaThrottle{a, b}[i%2].allow("usr_1", now); !ok {
			t.Fatalf("refused after %d failures", i)
		}
		[]*mfaThrottle{a, b}[i%2].fail("usr_1", now)
	}
	for _, m := range []*mfaThrottle{a, b} {
		if ok, until := m.allow("usr_1", now); ok || !until.Equal(now.Add(mfaFailWindow)) {
			t.Fatalf("after %d failures on two replicas: allowed %v until %v", mfaMaxFailures, ok, until)
		}
	}
	if ok, _ := a.allow("usr_2", now); !ok {
		t.Fatal("another user is locked too")
	}
	if ok, _ := a.allow("usr_1", now.Add(mfaFailWindow+time.Second)); !ok {
		t.Fatal("still locked after the window")
	}
	b.reset("usr_1")
	if ok, _ := a.allow("usr_1", now); !ok {
		t.Fatal("a good code on B did not clear the count on A")
	}
}

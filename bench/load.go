package bench

import (
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// parallel runs work on workers goroutines at once (w is the worker's
// index, from 0) and returns when every one has returned. Workers that
// collect results write them to their own slot of a slice made by the
// caller, so that no lock is needed.
func parallel(workers int, work func(w int)) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { work(w) })
	}
	wg.Wait()
}

// exchange is one request/response with the echo servers: it writes buf
// to c and reads as many bytes back, all before deadline.
func exchange(c net.Conn, buf []byte, deadline time.Time) error {
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

// errCount counts the errors of a load's workers and keeps the first one's
// text.
type errCount struct {
	n     atomic.Int64
	first atomic.Value // string
}

func (e *errCount) add(err error) {
	e.n.Add(1)
	e.first.CompareAndSwap(nil, err.Error())
}

// report returns how many errors there were and the first one's text.
func (e *errCount) report() (int, string) {
	s, _ := e.first.Load().(string)
	return int(e.n.Load()), s
}

// tally is the outcome of a timed load: every worker's latencies (one slot
// per worker) in one slice, the completions per second since start, and
// the errors; err names what when nothing completed.
func tally(what string, lat [][]time.Duration, errs *errCount, start time.Time) (all []time.Duration, perSec float64, nerr int, first string, err error) {
	elapsed := time.Since(start)
	all = slices.Concat(lat...)
	nerr, first = errs.report()
	if len(all) == 0 {
		return nil, 0, nerr, first, fmt.Errorf("%s: nothing completed (%d errors, first: %s)", what, nerr, first)
	}
	return all, float64(len(all)) / elapsed.Seconds(), nerr, first, nil
}

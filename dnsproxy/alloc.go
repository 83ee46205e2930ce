package dnsproxy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/internal/atomicfile"
)

// allocator hands out synthetic addresses. Each name gets one offset into
// the synthetic space; its IPv4 address is V4Range's base plus the offset,
// its IPv6 address V6Range's base plus the same offset. The first offset
// tried is a hash of the name (so even a lost state file mostly gives the
// same addresses again), then the next free one.
type allocator struct {
	v4, v6 netip.Prefix
	space  uint64 // offsets are in [reservedOffsets, space)
	max    int
	// minIdle: an entry used more recently than this is never reclaimed.
	minIdle time.Duration
	file    string
	log     *slog.Logger
	now     func() time.Time

	mu     sync.RWMutex
	byName map[string]*entry
	byOff  map[uint32]*entry
	dirty  atomic.Bool
	// saveMu serialises writers of the state file.
	saveMu sync.Mutex
}

type entry struct {
	name     string
	off      uint32
	lastUsed atomic.Int64 // unix seconds
}

func newAllocator(v4, v6 netip.Prefix, maxNames int, minIdle time.Duration, file string, log *slog.Logger) *allocator {
	space := uint64(1) << (32 - v4.Bits())
	if hb := 128 - v6.Bits(); hb < 32 {
		space = min(space, uint64(1)<<hb)
	}
	if usable := space - reservedOffsets; uint64(maxNames) > usable {
		maxNames = int(usable)
	}
	return &allocator{
		v4: v4, v6: v6, space: space, max: maxNames, minIdle: minIdle,
		file: file, log: log, now: time.Now,
		byName: make(map[string]*entry), byOff: make(map[uint32]*entry),
	}
}

// addrs returns the IPv4 and IPv6 address of an offset.
func (a *allocator) addrs(off uint32) (netip.Addr, netip.Addr) {
	b4 := a.v4.Addr().As4()
	binary.BigEndian.PutUint32(b4[:], binary.BigEndian.Uint32(b4[:])+off)
	b6 := a.v6.Addr().As16()
	binary.BigEndian.PutUint32(b6[12:], binary.BigEndian.Uint32(b6[12:])|off)
	return netip.AddrFrom4(b4), netip.AddrFrom16(b6)
}

// offsetOf maps an address inside either range back to its offset.
func (a *allocator) offsetOf(ip netip.Addr) (uint32, bool) {
	ip = ip.Unmap()
	switch {
	case ip.Is4() && a.v4.Contains(ip):
		b, base := ip.As4(), a.v4.Addr().As4()
		off := uint64(binary.BigEndian.Uint32(b[:]) - binary.BigEndian.Uint32(base[:]))
		return uint32(off), off < a.space
	case ip.Is6() && a.v6.Contains(ip):
		b, base := ip.As16(), a.v6.Addr().As16()
		for i := 0; i < 12; i++ {
			if b[i] != base[i] {
				return 0, false
			}
		}
		off := uint64(binary.BigEndian.Uint32(b[12:]) &^ binary.BigEndian.Uint32(base[12:]))
		return uint32(off), off < a.space
	}
	return 0, false
}

// lookup returns the offset of name, if allocated, and marks it used.
func (a *allocator) lookup(name string) (uint32, bool) {
	a.mu.RLock()
	e := a.byName[name]
	a.mu.RUnlock()
	if e == nil {
		return 0, false
	}
	a.touch(e)
	return e.off, true
}

func (a *allocator) touch(e *entry) {
	now := a.now().Unix()
	if e.lastUsed.Load() != now {
		e.lastUsed.Store(now)
	}
}

// get returns the offset of name, allocating one when needed.
func (a *allocator) get(name string) (uint32, error) {
	if off, ok := a.lookup(name); ok {
		return off, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.byName[name]; e != nil {
		a.touch(e)
		return e.off, nil
	}
	if len(a.byName) >= a.max && !a.reclaimLocked() {
		return 0, fmt.Errorf("%w: %d names in use, none idle for %s", ErrRangeFull, len(a.byName), a.minIdle)
	}
	usable := a.space - reservedOffsets
	h := fnv.New64a()
	h.Write([]byte(name))
	start := h.Sum64() % usable
	for i := uint64(0); i < usable; i++ {
		off := uint32(reservedOffsets + (start+i)%usable)
		if _, taken := a.byOff[off]; taken {
			continue
		}
		e := &entry{name: name, off: off}
		a.touch(e)
		a.byName[name] = e
		a.byOff[off] = e
		a.dirty.Store(true)
		return off, nil
	}
	return 0, fmt.Errorf("%w: no free address", ErrRangeFull)
}

// reclaimLocked frees the least recently used sixteenth of the entries
// that have been idle for at least minIdle. It reports whether anything was
// freed.
func (a *allocator) reclaimLocked() bool {
	cutoff := a.now().Add(-a.minIdle).Unix()
	idle := make([]*entry, 0, len(a.byName))
	for _, e := range a.byName {
		if e.lastUsed.Load() <= cutoff {
			idle = append(idle, e)
		}
	}
	if len(idle) == 0 {
		return false
	}
	slices.SortFunc(idle, func(x, y *entry) int { return int(x.lastUsed.Load() - y.lastUsed.Load()) })
	n := max(1, a.max/16)
	n = min(n, len(idle))
	for _, e := range idle[:n] {
		delete(a.byName, e.name)
		delete(a.byOff, e.off)
	}
	a.dirty.Store(true)
	a.log.Info("dns: reclaimed idle synthetic addresses", "count", n)
	return true
}

// nameAt returns the name an offset is allocated to.
func (a *allocator) nameAt(off uint32) (string, bool) {
	a.mu.RLock()
	e := a.byOff[off]
	a.mu.RUnlock()
	if e == nil {
		return "", false
	}
	return e.name, true
}

// each calls f for every allocation (under the read lock: f must not call
// back into the allocator).
func (a *allocator) each(f func(name string, off uint32)) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, e := range a.byName {
		f(e.name, e.off)
	}
}

type stateFile struct {
	Version int          `json:"version"`
	V4Range string       `json:"v4_range"`
	V6Range string       `json:"v6_range"`
	Names   []stateEntry `json:"names"`
}

type stateEntry struct {
	Name     string `json:"name"`
	Offset   uint32 `json:"offset"`
	LastUsed int64  `json:"last_used"`
}

// load reads the state file. A missing file is an empty state; an
// unreadable one is set aside (renamed *.corrupt) so the proxy still starts,
// and the hash placement gives most names their old addresses again.
func (a *allocator) load() error {
	if a.file == "" {
		return nil
	}
	b, err := os.ReadFile(a.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrState, a.file, err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil || st.Version != 1 {
		bad := a.file + ".corrupt"
		a.log.Warn("dns: state file unreadable; set aside, starting with no allocations", "file", a.file, "moved_to", bad, "err", err)
		if rerr := os.Rename(a.file, bad); rerr != nil {
			return fmt.Errorf("%w: %s is unreadable and could not be set aside: %w", ErrState, a.file, rerr)
		}
		return nil
	}
	if st.V4Range != a.v4.String() || st.V6Range != a.v6.String() {
		a.log.Info("dns: synthetic ranges changed; names keep their offsets in the new ranges", "old_v4", st.V4Range, "new_v4", a.v4, "old_v6", st.V6Range, "new_v6", a.v6)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Most recently used first, so that a smaller MaxNames keeps the
	// recent ones.
	slices.SortFunc(st.Names, func(x, y stateEntry) int { return int(y.LastUsed - x.LastUsed) })
	for _, s := range st.Names {
		if len(a.byName) >= a.max {
			break
		}
		if uint64(s.Offset) < reservedOffsets || uint64(s.Offset) >= a.space || s.Name == "" {
			continue
		}
		if _, dup := a.byName[s.Name]; dup {
			continue
		}
		if _, dup := a.byOff[s.Offset]; dup {
			continue
		}
		e := &entry{name: s.Name, off: s.Offset}
		e.lastUsed.Store(s.LastUsed)
		a.byName[s.Name] = e
		a.byOff[s.Offset] = e
	}
	return nil
}

// save writes the state file when something changed (atomically: a
// temporary file in the same directory, then rename).
func (a *allocator) save() error {
	if a.file == "" || !a.dirty.Load() {
		return nil
	}
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	if !a.dirty.Swap(false) {
		return nil
	}
	st := stateFile{Version: 1, V4Range: a.v4.String(), V6Range: a.v6.String()}
	a.mu.RLock()
	st.Names = make([]stateEntry, 0, len(a.byName))
	for _, e := range a.byName {
		st.Names = append(st.Names, stateEntry{Name: e.name, Offset: e.off, LastUsed: e.lastUsed.Load()})
	}
	a.mu.RUnlock()
	slices.SortFunc(st.Names, func(x, y stateEntry) int { return int(x.Offset) - int(y.Offset) })
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		a.dirty.Store(true)
		return fmt.Errorf("%w: encode: %w", ErrState, err)
	}
	if err := writeFileAtomic(a.file, b); err != nil {
		a.dirty.Store(true)
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return atomicfile.Write(path, b, 0o600)
}

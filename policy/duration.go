package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses an access duration: a Go duration ("12h", "90m",
// "1h30m") or a whole number of days ("30d"). It must be positive.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%w: empty duration", ErrSpec)
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 36500 {
			return 0, fmt.Errorf("%w: duration %q: days must be a whole number (like 30d)", ErrSpec, s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%w: duration %q: use a number with a unit, like 12h, 90m or 30d", ErrSpec, s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("%w: duration %q: must be positive", ErrSpec, s)
	}
	return d, nil
}

// FormatDuration renders d the way ParseDuration reads it, in whole days
// when it is a multiple of a day.
func FormatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
		if t, ok := strings.CutSuffix(s, "h0m"); ok {
			s = t + "h"
		}
	}
	return s
}

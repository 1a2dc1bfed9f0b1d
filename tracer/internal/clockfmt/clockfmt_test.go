package clockfmt

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestMatchesTimeFormat(t *testing.T) {
	var c Cache
	base := time.Date(2026, 11, 24, 5, 38, 37, 0, time.UTC).UnixNano()
	values := []int64{base, base + 1, base + 120_000_000, base + 100_000_000, base + 123_000_000, base + 123_450_000, base + 1_234_567, base + 999_999_999, base + 1e9, 0}
	for i := 0; i < 10000; i++ {
		values = append(values, base+rand.Int64N(5e9))
	}
	for _, ns := range values {
		tm := time.Unix(0, ns)
		if got, want := string(c.AppendRFC3339Nano(nil, ns)), tm.UTC().Format(time.RFC3339Nano); got != want {
			t.Fatalf("%d: %s, want %s", ns, got, want)
		}
		if got, want := string(c.AppendClock(nil, ns)), tm.Format("15:04:05.000000"); got != want {
			t.Fatalf("%d: %s, want %s", ns, got, want)
		}
	}
}

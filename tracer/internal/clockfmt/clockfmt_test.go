package clockfmt

import (
	"math/rand/v2"
	"strconv"
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

// Mono writes what strconv writes, across millisecond and digit-count
// boundaries, in and out of order.
func TestMonoMatchesStrconv(t *testing.T) {
	var m Mono
	values := []uint64{0, 1, 999_999, 1_000_000, 1_000_001, 9_999_999_999, 10_000_000_000, 21506419198467, 21506419198467, 21506419000000, 21506418999999, 1<<64 - 1}
	for i := 0; i < 10000; i++ {
		values = append(values, 21506419198467+rand.Uint64N(5e9), rand.Uint64())
	}
	for _, ns := range values {
		if got, want := string(m.Append([]byte("x"), ns)), "x"+strconv.FormatUint(ns, 10); got != want {
			t.Fatalf("%d: %s, want %s", ns, got, want)
		}
	}
}

func BenchmarkMono(b *testing.B) {
	var m Mono
	buf := make([]byte, 0, 32)
	ns := uint64(21506419198467)
	for b.Loop() {
		ns += 1100
		buf = m.Append(buf[:0], ns)
	}
}

func BenchmarkMonoStrconv(b *testing.B) {
	buf := make([]byte, 0, 32)
	ns := uint64(21506419198467)
	for b.Loop() {
		ns += 1100
		buf = strconv.AppendUint(buf[:0], ns, 10)
	}
}

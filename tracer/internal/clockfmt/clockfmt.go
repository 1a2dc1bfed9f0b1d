// Package clockfmt formats event times fast: the part that changes once a
// second is formatted once a second, the fraction by hand. Formatting a
// time.Time per event costs as much as everything else on the hot path.
package clockfmt

import (
	"strconv"
	"time"
)

// Cache formats wall-clock nanoseconds. The zero value is ready to use.
type Cache struct {
	sec    int64
	layout string
	prefix []byte
}

func (c *Cache) refresh(sec int64, layout string, utc bool) {
	t := time.Unix(sec, 0)
	if utc {
		t = t.UTC()
	}
	c.prefix = t.AppendFormat(c.prefix[:0], layout)
	c.sec, c.layout = sec, layout
}

const (
	clockLayout = "15:04:05"
	rfcLayout   = "2006-01-02T15:04:05"
)

func split(ns int64) (sec, frac int64) {
	sec, frac = ns/1e9, ns%1e9
	if frac < 0 {
		sec, frac = sec-1, frac+1e9
	}
	return sec, frac
}

// AppendClock appends local time as 15:04:05.000000.
func (c *Cache) AppendClock(b []byte, ns int64) []byte {
	sec, frac := split(ns)
	if sec != c.sec || c.layout != clockLayout {
		c.refresh(sec, clockLayout, false)
	}
	b = append(b, c.prefix...)
	b = append(b, '.')
	return appendDigits(b, frac/1e3, 6)
}

// AppendRFC3339Nano appends UTC time exactly as time.RFC3339Nano does.
func (c *Cache) AppendRFC3339Nano(b []byte, ns int64) []byte {
	sec, frac := split(ns)
	if sec != c.sec || c.layout != rfcLayout {
		c.refresh(sec, rfcLayout, true)
	}
	b = append(b, c.prefix...)
	if frac != 0 {
		// Trailing zeros are dropped, as time.RFC3339Nano does; a
		// nanosecond clock rarely has any.
		digits := 9
		for frac%10 == 0 {
			frac /= 10
			digits--
		}
		b = append(b, '.')
		b = appendDigits(b, frac, digits)
	}
	return append(b, 'Z')
}

// pairs holds "00" to "99": the fraction is formatted two digits per
// division, which halves the divisions of one digit at a time.
const pairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// appendDigits appends v (0 ≤ v < 1e9) in n (at most 9) digits, zero-padded.
// The digits go straight into b: a copy of a few bytes through memmove
// cost as much as the divisions.
func appendDigits(b []byte, v int64, n int) []byte {
	l := len(b)
	if cap(b)-l < n {
		b = append(b, make([]byte, n)...)[:l]
	}
	b = b[:l+n]
	d := b[l:]
	u := uint32(v)
	i := n
	for i >= 2 {
		q := u / 100
		r := (u - q*100) * 2
		i -= 2
		d[i], d[i+1] = pairs[r], pairs[r+1]
		u = q
	}
	if i == 1 {
		d[0] = byte('0' + u%10)
	}
	return b
}

// Mono formats monotonic nanoseconds in decimal, as strconv does: the
// digits above the millisecond are formatted once a millisecond (a busy
// host's events come hundreds to a millisecond), the rest by hand. The zero
// value is ready to use.
type Mono struct {
	ms   uint64
	text []byte // the decimal digits of ms; empty: none yet
}

// Append appends ns in decimal; a nil Mono formats it afresh.
func (m *Mono) Append(b []byte, ns uint64) []byte {
	ms := ns / 1e6
	if m == nil || ms == 0 {
		return strconv.AppendUint(b, ns, 10)
	}
	if ms != m.ms || len(m.text) == 0 {
		m.ms, m.text = ms, strconv.AppendUint(m.text[:0], ms, 10)
	}
	b = append(b, m.text...)
	return appendDigits(b, int64(ns-ms*1e6), 6)
}

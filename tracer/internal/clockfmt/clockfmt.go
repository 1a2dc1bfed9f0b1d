// Package clockfmt formats event times fast: the part that changes once a
// second is formatted once a second, the fraction by hand. Formatting a
// time.Time per event costs as much as everything else on the hot path.
package clockfmt

import "time"

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

func appendDigits(b []byte, v int64, n int) []byte {
	var d [9]byte
	for i := n - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:n]...)
}

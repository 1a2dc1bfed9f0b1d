package capture

import (
	"math"
	"unicode/utf8"

	"github.com/tcptrail/tcptrail/tracer/record"
)

// Transitions are most of a capture and encoding/json spends about 7µs and
// 15 allocations on each. fastTransition decodes the common case itself:
// a flat object of the transition's own fields, strings without escapes,
// integers. It declines (returns false) anything else, and the caller falls
// back to encoding/json, so the result never differs from what
// encoding/json would decode; FuzzFastTransition checks that.

// maxInterned bounds the reader's string cache: states, families, causes,
// addresses and process names repeat across millions of lines.
const maxInterned = 4096

// intern returns b as a string, shared with earlier equal ones.
func (r *Reader) intern(b []byte) string {
	if s, ok := r.strs[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if len(r.strs) < maxInterned {
		if r.strs == nil {
			r.strs = make(map[string]string)
		}
		r.strs[s] = s
	}
	return s
}

// lexer walks one line.
type lexer struct {
	b []byte
	i int
}

func (l *lexer) ws() {
	for l.i < len(l.b) {
		switch l.b[l.i] {
		case ' ', '\t', '\n', '\r':
			l.i++
		default:
			return
		}
	}
}

// next skips white space and consumes c.
func (l *lexer) next(c byte) bool {
	l.ws()
	if l.i < len(l.b) && l.b[l.i] == c {
		l.i++
		return true
	}
	return false
}

// peek skips white space and reports whether c is next.
func (l *lexer) peek(c byte) bool {
	l.ws()
	return l.i < len(l.b) && l.b[l.i] == c
}

// str reads a string without escapes, as raw bytes (quotes excluded).
func (l *lexer) str() ([]byte, bool) {
	if !l.next('"') {
		return nil, false
	}
	start := l.i
	ascii := true
	for ; l.i < len(l.b); l.i++ {
		c := l.b[l.i]
		switch {
		case c == '"':
			s := l.b[start:l.i]
			l.i++
			// encoding/json replaces invalid UTF-8: leave that to it.
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// uint reads a non-negative integer of at most max.
func (l *lexer) uint(max uint64) (uint64, bool) {
	l.ws()
	start := l.i
	var v uint64
	for l.i < len(l.b) && l.b[l.i] >= '0' && l.b[l.i] <= '9' {
		d := uint64(l.b[l.i] - '0')
		if v > (max-d)/10 {
			return 0, false
		}
		v = v*10 + d
		l.i++
	}
	n := l.i - start
	if n == 0 || (n > 1 && l.b[start] == '0') || l.fraction() {
		return 0, false
	}
	return v, true
}

// int reads an integer in [min, max].
func (l *lexer) int(min, max int64) (int64, bool) {
	l.ws()
	if l.i < len(l.b) && l.b[l.i] == '-' {
		l.i++
		if l.i >= len(l.b) || l.b[l.i] < '0' || l.b[l.i] > '9' {
			return 0, false
		}
		v, ok := l.uint(uint64(-min))
		return -int64(v), ok
	}
	v, ok := l.uint(uint64(max))
	return int64(v), ok
}

// fraction reports a number going on past its integer part: 1.5, 1e3.
func (l *lexer) fraction() bool {
	return l.i < len(l.b) && (l.b[l.i] == '.' || l.b[l.i] == 'e' || l.b[l.i] == 'E')
}

// word consumes a literal such as null or true.
func (l *lexer) word(w string) bool {
	l.ws()
	if len(l.b)-l.i >= len(w) && string(l.b[l.i:l.i+len(w)]) == w {
		l.i += len(w)
		return true
	}
	return false
}

// fastTransition decodes line into t, which the caller has reset. It
// returns false, with t in any state, when encoding/json must decide.
func (r *Reader) fastTransition(line []byte, t *record.Transition) bool {
	l := lexer{b: line}
	if !l.next('{') {
		return false
	}
	for first := true; ; first = false {
		if l.next('}') {
			l.ws()
			return l.i == len(l.b) && !first
		}
		if !first && !l.next(',') {
			return false
		}
		key, ok := l.str()
		if !ok || !l.next(':') {
			return false
		}
		if !r.transitionField(&l, string(key), t) {
			return false
		}
	}
}

func (r *Reader) transitionField(l *lexer, key string, t *record.Transition) bool {
	var ok bool
	var u uint64
	var s []byte
	switch key {
	case "type":
		s, ok = l.str()
		t.Type = r.intern(s)
	case "time":
		l.ws()
		start := l.i
		if _, ok = l.str(); ok {
			// The same parser encoding/json calls.
			ok = t.Time.UnmarshalJSON(l.b[start:l.i]) == nil
		}
	case "mono_ns":
		t.MonoNs, ok = l.uint(math.MaxUint64)
	case "cookie":
		t.Cookie, ok = l.uint(math.MaxUint64)
	case "netns":
		u, ok = l.uint(math.MaxUint32)
		t.NetNS = uint32(u)
	case "family":
		s, ok = l.str()
		t.Family = r.intern(s)
	case "laddr":
		s, ok = l.str()
		t.Laddr = r.intern(s)
	case "lport":
		u, ok = l.uint(math.MaxUint16)
		t.Lport = uint16(u)
	case "raddr":
		s, ok = l.str()
		t.Raddr = r.intern(s)
	case "rport":
		u, ok = l.uint(math.MaxUint16)
		t.Rport = uint16(u)
	case "old":
		s, ok = l.str()
		t.Old = r.intern(s)
	case "new":
		s, ok = l.str()
		t.New = r.intern(s)
	case "prev_state_ns":
		if l.word("null") {
			t.PrevStateNs, ok = nil, true
			break
		}
		var v int64
		if v, ok = l.int(math.MinInt64, math.MaxInt64); ok {
			if t.PrevStateNs == nil {
				t.PrevStateNs = new(int64)
			}
			*t.PrevStateNs = v
		}
	case "gap":
		switch {
		case l.word("true"):
			t.Gap, ok = true, true
		case l.word("false"):
			t.Gap, ok = false, true
		}
	case "expected_old":
		s, ok = l.str()
		t.ExpectedOld = r.intern(s)
	case "pid":
		u, ok = l.uint(math.MaxUint32)
		t.PID = uint32(u)
	case "comm":
		s, ok = l.str()
		t.Comm = r.intern(s)
	case "cgroup":
		t.Cgroup, ok = l.uint(math.MaxUint64)
	case "cause":
		s, ok = l.str()
		t.Cause = r.intern(s)
	case "cause_kind":
		s, ok = l.str()
		t.CauseKind = r.intern(s)
	case "sk_err":
		s, ok = l.str()
		t.SkErr = r.intern(s)
	case "owners":
		t.Owners, ok = r.owners(l, t.Owners[:0])
	}
	return ok
}

// owners reads an array of owners into out, reusing its memory.
func (r *Reader) owners(l *lexer, out []record.Owner) ([]record.Owner, bool) {
	if l.word("null") {
		return nil, true
	}
	if !l.next('[') {
		return nil, false
	}
	if out == nil {
		out = []record.Owner{} // encoding/json makes [] a non-nil empty slice
	}
	if l.next(']') {
		return out, true
	}
	for {
		var o record.Owner
		if !l.next('{') {
			return nil, false
		}
		for first := true; !l.next('}'); first = false {
			if !first && !l.next(',') {
				return nil, false
			}
			key, ok := l.str()
			if !ok || !l.next(':') {
				return nil, false
			}
			switch string(key) {
			case "pid":
				var u uint64
				u, ok = l.uint(math.MaxUint32)
				o.PID = uint32(u)
			case "comm":
				var s []byte
				s, ok = l.str()
				o.Comm = r.intern(s)
			case "fd":
				var v int64
				v, ok = l.int(math.MinInt32, math.MaxInt32)
				o.FD = int32(v)
			case "container":
				var s []byte
				s, ok = l.str()
				o.Container = r.intern(s)
			default:
				ok = false
			}
			if !ok {
				return nil, false
			}
		}
		out = append(out, o)
		if l.next(']') {
			return out, true
		}
		if !l.next(',') {
			return nil, false
		}
	}
}

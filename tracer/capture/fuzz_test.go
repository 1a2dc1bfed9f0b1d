package capture

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/record"
)

// FuzzReader feeds arbitrary bytes to the reader: it must never panic,
// must end, and every error it returns must say which line (or that the
// file is not a capture or was cut short).
//
//	go test -run '^$' -fuzz FuzzReader ./tracer/capture/
func FuzzReader(f *testing.F) {
	seeds := []string{
		lines(testHeader, testTransition, testSummary),
		lines(testHeader, testTransition),
		lines(testHeader, testTransition) + testTransition[:40],
		lines(testHeader, `{"type":"call","time":"2025-11-24T05:30:01Z","mono_ns":9,"call":"bind","fd":4,"ret":-98,"errno":"EADDRINUSE","cookie":0,"family":"ipv4","laddr":"127.0.0.1","lport":10001,"raddr":"0.0.0.0","rport":0,"state":"CLOSE","pid":1,"comm":"c"}`),
		lines(testHeader, `{"type":"snapshot","time":"2025-11-24T05:30:01Z","mono_ns":9,"reason":"timewait","cookie":5,"family":"ipv4","laddr":"127.0.0.1","lport":1,"raddr":"127.0.0.1","rport":2,"state":"TIME_WAIT","timer_ms":59000,"owners":[]}`),
		lines(testHeader, `{"type":"bind_conflict","mono_ns":9,"holders":[{"cookie":1,"state":"CLOSE_WAIT","state_ns":-1,"owners":null}]}`),
		lines(testHeader, `{"type":"leak","mono_ns":9,"phase":"stuck","since":"2025-11-24T05:30:01Z"}`, `{"type":"lost","mono_ns":9,"ringbuf_full":3}`),
		lines(testHeader, `{"type":"exit","pid":1}`, `{"type":"fork","pid":1,"child":2}`, `{"type":"connect_failed","errno":"ECONNREFUSED"}`),
		lines(testHeader, `{"type":"teleport"}`, `{}`, `[]`, `"x"`, `null`, testSummary),
		lines(`{"type":"header","schema":99}`),
		"not json\n",
		"\x00\x00\x00",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data))
		maxCalls := bytes.Count(data, []byte("\n")) + 3
		records := 0
		for i := 0; ; i++ {
			if i > maxCalls {
				t.Fatalf("more than %d results from %d lines", i, maxCalls-2)
			}
			rec, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				var le *LineError
				if !errors.As(err, &le) && !errors.Is(err, ErrNoSummary) && !errors.Is(err, ErrNotCapture) {
					t.Fatalf("error names no line: %v", err)
				}
				if le != nil && (le.Line < 1 || le.Line > rd.Line()) {
					t.Fatalf("error names line %d of %d", le.Line, rd.Line())
				}
				continue
			}
			if rec == nil {
				t.Fatal("nil record without an error")
			}
			if _, ok := rec.(*record.Header); ok != (records == 0) {
				t.Fatalf("record %d is a %T: a header comes first and only first", records+1, rec)
			}
			records++
		}
	})
}

// FuzzFastTransition checks that the fast transition decoder, when it
// accepts a line, decodes exactly what encoding/json decodes.
//
//	go test -run '^$' -fuzz FuzzFastTransition ./tracer/capture/
func FuzzFastTransition(f *testing.F) {
	f.Add([]byte(testTransition))
	f.Add([]byte(strings.Replace(testTransition, `"prev_state_ns":268766`, `"prev_state_ns":null,"gap":true,"expected_old":"SYN_SENT"`, 1)))
	f.Add([]byte(strings.Replace(testTransition, `"owners":[{"pid":4200,"comm":"client","fd":3}]`, `"owners":[],"sk_err":"ECONNREFUSED"`, 1)))
	f.Add([]byte(strings.Replace(testTransition, `"comm":"server"`, `"comm":"ser\u00e9ver"`, 1)))
	f.Add([]byte(strings.Replace(testTransition, `"lport":10001`, `"lport":-1`, 1)))
	f.Add([]byte(`{"type":"transition","owners":null,"fd":-2147483648}`))
	f.Add([]byte(`{"cookie":18446744073709551615,"pid":4294967295} `))
	f.Fuzz(func(t *testing.T, line []byte) {
		var r Reader
		var fast record.Transition
		if !r.fastTransition(line, &fast) {
			return
		}
		var slow record.Transition
		if err := json.Unmarshal(line, &slow); err != nil {
			t.Fatalf("fast decoder accepted what encoding/json refuses (%v): %q", err, line)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decoders differ on %q:\nfast %+v\nslow %+v", line, fast, slow)
		}
	})
}

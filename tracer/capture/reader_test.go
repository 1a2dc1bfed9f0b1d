package capture

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tcptrail/tcptrail/tracer/record"
)

const (
	testHeader     = `{"type":"header","schema":1,"tool":"tcptrail","version":"1.0","host":"h","kernel":"6.18","start_time":"2025-11-24T05:30:00Z","start_mono_ns":1000,"filters":{"ports":[7070],"pid":0},"attach":"tp_btf"}`
	testTransition = `{"type":"transition","time":"2025-11-24T05:30:00.5Z","mono_ns":500001000,"cookie":8193,"family":"ipv4","laddr":"127.0.0.1","lport":10001,"raddr":"127.0.0.1","rport":7070,"old":"ESTABLISHED","new":"CLOSE_WAIT","prev_state_ns":268766,"pid":4100,"comm":"server","cause":"peer closed (FIN)","cause_kind":"peer_fin","owners":[{"pid":4200,"comm":"client","fd":3}]}`
	testSummary    = `{"type":"summary","time":"2025-11-24T05:30:01Z","mono_ns":1000001000,"duration_ns":1000000000,"events":1,"transitions":1,"sockets":1,"lost":{"ringbuf_full":0,"recursion_misses":0,"inflight_full":0,"queue_full":0,"gaps":0},"leaks":[]}`
)

// outcome is what a reader made of a file: the record types it returned
// and the errors, in order.
type outcome struct {
	types []string
	errs  []error
}

func readAll(t *testing.T, r io.Reader) outcome {
	t.Helper()
	rd := NewReader(r)
	var o outcome
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("reader does not end")
		}
		rec, err := rd.Next()
		if err == io.EOF {
			return o
		}
		if err != nil {
			if rec != nil {
				t.Errorf("Next returned both a record and %v", err)
			}
			o.errs = append(o.errs, err)
			continue
		}
		o.types = append(o.types, fmt.Sprintf("%T", rec))
	}
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func TestReaderFiles(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		types []string
		// errs: for each error in order, the sentinel it wraps (nil: any)
		// and the text it must contain.
		errs []wantErr
	}{{
		name:  "complete",
		file:  lines(testHeader, testTransition, testSummary),
		types: []string{"*record.Header", "*record.Transition", "*record.Summary"},
	}, {
		name:  "killed between records: no summary",
		file:  lines(testHeader, testTransition),
		types: []string{"*record.Header", "*record.Transition"},
		errs:  []wantErr{{ErrNoSummary, "after line 2: no summary record"}},
	}, {
		name:  "killed mid-line",
		file:  lines(testHeader, testTransition) + testTransition[:57],
		types: []string{"*record.Header", "*record.Transition"},
		errs:  []wantErr{{ErrTruncated, "line 3: the last line is cut short"}, {ErrNoSummary, "after line 3"}},
	}, {
		name:  "cut right before the last newline keeps the record",
		file:  lines(testHeader, testTransition) + testSummary,
		types: []string{"*record.Header", "*record.Transition", "*record.Summary"},
	}, {
		name:  "crash left zeros at the end",
		file:  lines(testHeader, testTransition) + "\x00\x00\x00\x00",
		types: []string{"*record.Header", "*record.Transition"},
		errs:  []wantErr{{ErrTruncated, "line 3"}, {ErrNoSummary, ""}},
	}, {
		name:  "blank lines and CRLF are harmless",
		file:  testHeader + "\r\n\r\n" + testTransition + "\r\n" + testSummary + "\r\n",
		types: []string{"*record.Header", "*record.Transition", "*record.Summary"},
	}, {
		name:  "a line that is not JSON in the middle",
		file:  lines(testHeader, "garbage here", testTransition, testSummary),
		types: []string{"*record.Header", "*record.Transition", "*record.Summary"},
		errs:  []wantErr{{ErrNotJSON, "line 2: not JSON: invalid character 'g'"}},
	}, {
		name:  "unknown record type",
		file:  lines(testHeader, `{"type":"teleport","mono_ns":5}`, testTransition, testSummary),
		types: []string{"*record.Header", "*record.Transition", "*record.Summary"},
		errs:  []wantErr{{ErrUnknownType, `line 2: unknown record type "teleport"`}},
	}, {
		name:  "record without a type after the header",
		file:  lines(testHeader, `{"mono_ns":5}`, testSummary),
		types: []string{"*record.Header", "*record.Summary"},
		errs:  []wantErr{{nil, `line 2: record has no "type" field`}},
	}, {
		name:  "a field of the wrong type",
		file:  lines(testHeader, strings.Replace(testTransition, `"lport":10001`, `"lport":"x"`, 1), testSummary),
		types: []string{"*record.Header", "*record.Summary"},
		errs:  []wantErr{{nil, `line 2: bad transition record: field "lport" holds string, want uint16`}},
	}, {
		name:  "a JSON array, not an object",
		file:  lines(testHeader, `[1,2]`, testSummary),
		types: []string{"*record.Header", "*record.Summary"},
		errs:  []wantErr{{ErrNotJSON, "line 2: not JSON object"}},
	}, {
		name: "newer schema",
		file: lines(strings.Replace(testHeader, `"schema":1`, `"schema":99`, 1), testTransition, testSummary),
		errs: []wantErr{{ErrSchemaTooNew, "line 1: capture schema is newer than this tcptrail reads: it has schema 99, this tcptrail reads up to schema 2"}},
	}, {
		name: "no schema",
		file: lines(strings.Replace(testHeader, `"schema":1,`, ``, 1), testSummary),
		errs: []wantErr{{ErrNotCapture, "line 1: not a tcptrail capture: the header has no valid schema version"}},
	}, {
		name: "not JSON at all",
		file: "root:x:0:0:root:/root:/bin/bash\n",
		errs: []wantErr{{ErrNotCapture, "line 1: not a tcptrail capture: not JSON"}},
	}, {
		name: "another tool's JSON",
		file: lines(`{"level":"info","msg":"hello"}`, `{"level":"info","msg":"bye"}`),
		errs: []wantErr{{ErrNotCapture, `line 1: not a tcptrail capture: the first record has no "type" field`}},
	}, {
		name: "another tool's typed JSON",
		file: lines(`{"type":"header","schema":1,"tool":"pwru"}`),
		errs: []wantErr{{ErrNotCapture, `written by "pwru"`}},
	}, {
		name: "no header",
		file: lines(testTransition, testSummary),
		errs: []wantErr{{ErrNotCapture, `line 1: not a tcptrail capture: the first record is a "transition", not a header`}},
	}, {
		name: "empty file",
		file: "",
		errs: []wantErr{{ErrNotCapture, "the file is empty"}},
	}, {
		name: "only blank lines",
		file: "\n\n  \n",
		errs: []wantErr{{ErrNotCapture, "the file is empty"}},
	}, {
		name:  "two captures joined",
		file:  lines(testHeader, testTransition, testSummary, testHeader, testTransition, testSummary),
		types: []string{"*record.Header", "*record.Transition", "*record.Summary"},
		errs:  []wantErr{{nil, "line 4: a second header"}},
	}, {
		name:  "records after the summary",
		file:  lines(testHeader, testSummary, testTransition),
		types: []string{"*record.Header", "*record.Summary"},
		errs:  []wantErr{{nil, `line 3: a "transition" record after the summary (line 2)`}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, strings.NewReader(tt.file))
			if strings.Join(got.types, " ") != strings.Join(tt.types, " ") {
				t.Errorf("records %v, want %v", got.types, tt.types)
			}
			if len(got.errs) != len(tt.errs) {
				t.Fatalf("errors %v, want %d", got.errs, len(tt.errs))
			}
			for i, w := range tt.errs {
				w.check(t, got.errs[i])
			}
		})
	}
}

type wantErr struct {
	is   error
	text string
}

func (w wantErr) check(t *testing.T, err error) {
	t.Helper()
	if w.is != nil && !errors.Is(err, w.is) {
		t.Errorf("error %q does not wrap %q", err, w.is)
	}
	if !strings.Contains(err.Error(), w.text) {
		t.Errorf("error %q does not say %q", err, w.text)
	}
}

func TestReaderLineErrorNamesLine(t *testing.T) {
	file := lines(testHeader, testTransition, "{oops", testSummary)
	rd := NewReader(strings.NewReader(file))
	var lineErr *LineError
	for {
		_, err := rd.Next()
		if err == io.EOF {
			break
		}
		if errors.As(err, &lineErr) {
			break
		}
	}
	if lineErr == nil || lineErr.Line != 3 {
		t.Fatalf("got %#v, want a *LineError for line 3", lineErr)
	}
}

func TestReaderDecodesFields(t *testing.T) {
	rd := NewReader(strings.NewReader(lines(testHeader, testTransition, testSummary)))
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	h := rd.Header()
	if h == nil || h.Host != "h" || h.StartMonoNs != 1000 || len(h.Filters.Ports) != 1 || h.Filters.Ports[0] != 7070 {
		t.Fatalf("header %+v", h)
	}
	rec, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	tr := rec.(*record.Transition)
	want := time.Date(2025, 11, 24, 5, 30, 0, 500_000_000, time.UTC)
	if tr.Cookie != 8193 || tr.Lport != 10001 || tr.Old != "ESTABLISHED" || tr.New != "CLOSE_WAIT" ||
		tr.PrevStateNs == nil || *tr.PrevStateNs != 268766 || !tr.Time.Equal(want) || tr.MonoNs != 500001000 ||
		len(tr.Owners) != 1 || tr.Owners[0].Comm != "client" || tr.CauseKind != "peer_fin" {
		t.Fatalf("transition %+v", tr)
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if !rd.Complete() {
		t.Error("Complete() is false after the summary")
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("after the summary: %v, want io.EOF", err)
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("after io.EOF: %v, want io.EOF again", err)
	}
}

// A reused record must not keep fields of the one before: the writer omits
// "gap" and "sk_err" when they are unset.
func TestReaderResetsReusedRecords(t *testing.T) {
	gap := strings.Replace(testTransition, `"prev_state_ns":268766`, `"prev_state_ns":null,"gap":true,"expected_old":"SYN_SENT"`, 1)
	rd := NewReader(strings.NewReader(lines(testHeader, gap, testTransition, testSummary)))
	rd.Next()
	first, _ := rd.Next()
	if tr := first.(*record.Transition); !tr.Gap || tr.ExpectedOld != "SYN_SENT" || tr.PrevStateNs != nil {
		t.Fatalf("first transition %+v", tr)
	}
	second, _ := rd.Next()
	if tr := second.(*record.Transition); tr.Gap || tr.ExpectedOld != "" || tr.PrevStateNs == nil {
		t.Fatalf("second transition kept the first's fields: %+v", tr)
	}
}

// Lines longer than the read buffer are assembled; lines beyond
// MaxLineBytes are skipped whole without taking all memory.
func TestReaderLongLines(t *testing.T) {
	long := strings.Replace(testTransition, `"comm":"server"`, `"comm":"`+strings.Repeat("x", 3*readBufSize)+`"`, 1)
	got := readAll(t, strings.NewReader(lines(testHeader, long, testSummary)))
	if len(got.errs) != 0 || len(got.types) != 3 {
		t.Fatalf("long line: %v %v", got.types, got.errs)
	}

	huge := `{"type":"call","note":"` + strings.Repeat("y", MaxLineBytes) + `"}`
	got = readAll(t, strings.NewReader(lines(testHeader, huge, testTransition, testSummary)))
	if len(got.errs) != 1 || !errors.Is(got.errs[0], ErrLineTooLong) || !strings.Contains(got.errs[0].Error(), "line 2") {
		t.Fatalf("huge line: errors %v", got.errs)
	}
	if len(got.types) != 3 {
		t.Fatalf("huge line: records after it were lost: %v", got.types)
	}
}

// Reading one byte at a time, or with errors from the underlying reader,
// gives the same records or a clear error.
func TestReaderReadPatterns(t *testing.T) {
	file := lines(testHeader, testTransition, testSummary)
	got := readAll(t, iotest.OneByteReader(strings.NewReader(file)))
	if len(got.errs) != 0 || len(got.types) != 3 {
		t.Fatalf("one byte at a time: %v %v", got.types, got.errs)
	}
	got = readAll(t, iotest.DataErrReader(strings.NewReader(file)))
	if len(got.errs) != 0 || len(got.types) != 3 {
		t.Fatalf("data with EOF: %v %v", got.types, got.errs)
	}
	boom := errors.New("disk on fire")
	got = readAll(t, io.MultiReader(strings.NewReader(lines(testHeader)), iotest.ErrReader(boom)))
	if len(got.errs) != 1 || !errors.Is(got.errs[0], boom) || !strings.Contains(got.errs[0].Error(), "read line 2") {
		t.Fatalf("read error: %v", got.errs)
	}
}

// Decoding the transitions a writer wrote allocates nothing once the
// reader has seen their strings: a million-line capture costs no garbage.
func TestReaderAllocations(t *testing.T) {
	var file bytes.Buffer
	file.WriteString(testHeader + "\n")
	for range 1000 {
		file.WriteString(testTransition + "\n")
	}
	rd := NewReader(bytes.NewReader(file.Bytes()))
	rd.Next()
	rd.Next() // warm up the reused record and the string cache
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := rd.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per transition, want 0", allocs)
	}
}

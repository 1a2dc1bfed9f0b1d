package capture

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tcptrail/tcptrail/tracer/record"
)

// Errors a Reader reports, wrapped in a *LineError when a line is to blame.
// Test them with errors.Is.
var (
	// ErrTruncated: the file ends in the middle of a line, as a capture does
	// when tcptrail was killed or the machine crashed while writing it.
	// Everything before that line is intact.
	ErrTruncated = errors.New("the last line is cut short: the capture was interrupted while it was written")
	// ErrNoSummary: the file ends without its summary record, so the capture
	// was cut short (tcptrail was killed or crashed). The records before are
	// intact; only the totals of the summary are missing.
	ErrNoSummary = errors.New("no summary record at the end: the capture was cut short")
	// ErrNotCapture: the file is not a tcptrail capture: empty, not JSON
	// Lines, or JSON that does not start with a tcptrail header.
	ErrNotCapture = errors.New("not a tcptrail capture")
	// ErrSchemaTooNew: the capture was written by a newer tcptrail whose
	// records this one may misread.
	ErrSchemaTooNew = errors.New("capture schema is newer than this tcptrail reads")
	// ErrUnknownType: a record whose "type" this version does not know.
	ErrUnknownType = errors.New("unknown record type")
	// ErrNotJSON: a line that is not a JSON object.
	ErrNotJSON = errors.New("not JSON")
	// ErrLineTooLong: a line longer than MaxLineBytes, skipped whole.
	ErrLineTooLong = errors.New("line too long")
)

// MaxLineBytes bounds one line. The longest real records (a summary listing
// many leaks) are far shorter; the bound keeps a file that is not JSON Lines
// at all (one huge line) from taking all memory.
const MaxLineBytes = 64 << 20

// readBufSize is the reader's buffer: most lines fit, longer ones are
// assembled in a side buffer.
const readBufSize = 1 << 20

// LineError is a problem with one line of a capture.
type LineError struct {
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return "line " + strconv.Itoa(e.Line) + ": " + e.Err.Error() }
func (e *LineError) Unwrap() error { return e.Err }

// Reader reads a capture record by record, in one pass with bounded memory.
//
// Next returns every problem once, as it meets it, and io.EOF when there is
// nothing more to read. After a problem with one line (ErrNotJSON,
// ErrUnknownType, a field of the wrong type, ErrLineTooLong) reading goes on
// with the next line, so a damaged capture still yields every intact
// record. A file that is not a capture (ErrNotCapture, ErrSchemaTooNew) ends
// reading at its first line. A file that ends without a summary yields
// ErrNoSummary just before io.EOF, after ErrTruncated if its last line was
// cut.
type Reader struct {
	br     *bufio.Reader
	long   []byte // a line longer than br's buffer, assembled
	line   int    // number of the last line read
	done   bool
	header *record.Header
	// summaryLine is the line of the summary; 0 until it is read.
	summaryLine int

	strs map[string]string // see intern

	// Records are decoded into these and handed out; see Next.
	hdr     record.Header
	tr      record.Transition
	call    record.Call
	exit    record.Exit
	fork    record.Fork
	snap    record.Snapshot
	lost    record.Lost
	leak    record.Leak
	bind    record.BindConflict
	connect record.ConnectFail
	summary record.Summary
}

// NewReader reads a capture from r. It buffers r itself.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readBufSize)}
}

// Header returns the capture's header, nil before it was read.
func (r *Reader) Header() *record.Header { return r.header }

// Line returns the number of the last line read.
func (r *Reader) Line() int { return r.line }

// Complete reports whether the summary record was read: the capture ended
// normally.
func (r *Reader) Complete() bool { return r.summaryLine != 0 }

// Next returns the next record as a pointer to one of the record types
// (*Header, *Transition, *Call, *Exit, *Fork, *Snapshot, *Lost, *Leak,
// *BindConflict, *ConnectFail, *Summary).
//
// The record is owned by the Reader and overwritten by a later call to Next
// (which keeps decoding free of allocations beyond the fields' own): copy
// what you keep. The header stays valid; see Header.
func (r *Reader) Next() (any, error) {
	for !r.done {
		line, complete, err := r.readLine()
		if err != nil && err != io.EOF && !errors.Is(err, ErrLineTooLong) {
			r.done = true
			return nil, fmt.Errorf("read line %d: %w", r.line+1, err)
		}
		if len(line) == 0 && !complete && err == io.EOF {
			return nil, r.finish()
		}
		r.line++
		if errors.Is(err, ErrLineTooLong) {
			if r.header == nil {
				r.done = true
				return nil, &LineError{r.line, fmt.Errorf("%w: a line of more than %d bytes", ErrNotCapture, MaxLineBytes)}
			}
			return nil, &LineError{r.line, fmt.Errorf("%w: more than %d bytes, skipped", ErrLineTooLong, MaxLineBytes)}
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue // blank lines are harmless
		}
		rec, err := r.decode(line)
		if err != nil {
			if !complete {
				// The writer ends every record with a newline, so a last
				// line without one that does not decode was being written
				// when the writer stopped. (A cut right before the newline
				// left a whole record, which decodes and is kept.)
				err = ErrTruncated
			}
			if r.header == nil {
				r.done = true
				err = notCapture(err)
			}
			return nil, &LineError{r.line, err}
		}
		return rec, nil
	}
	return nil, io.EOF
}

// notCapture explains a bad first line.
func notCapture(err error) error {
	if err == nil || errors.Is(err, ErrNotCapture) || errors.Is(err, ErrSchemaTooNew) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNotCapture, err)
}

// finish is the end of the file.
func (r *Reader) finish() error {
	r.done = true
	switch {
	case r.header == nil:
		return fmt.Errorf("%w: the file is empty", ErrNotCapture)
	case r.summaryLine == 0:
		return fmt.Errorf("after line %d: %w", r.line, ErrNoSummary)
	}
	return io.EOF
}

// readLine returns the next line without its newline, and whether it had
// one. The slice is valid until the next call.
func (r *Reader) readLine() (line []byte, complete bool, err error) {
	b, err := r.br.ReadSlice('\n')
	if err == nil {
		return b[:len(b)-1], true, nil
	}
	if err != bufio.ErrBufferFull {
		return b, false, err
	}
	r.long = append(r.long[:0], b...)
	tooLong := false
	for {
		b, err = r.br.ReadSlice('\n')
		if !tooLong && len(r.long)+len(b) > MaxLineBytes {
			tooLong = true
			r.long = r.long[:0]
		}
		if !tooLong {
			r.long = append(r.long, b...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case tooLong && (err == nil || err == io.EOF):
			// Drop the buffer too: a one-off monster line should not pin
			// its memory for the rest of the read.
			r.long = nil
			return nil, err == nil, ErrLineTooLong
		case err == nil:
			return r.long[:len(r.long)-1], true, nil
		default:
			return r.long, false, err
		}
	}
}

// decode decodes one non-blank line.
func (r *Reader) decode(line []byte) (any, error) {
	typ := fastType(line)
	if typ == "" {
		// Not written by tcptrail's writer (which puts "type" first), or a
		// type this version does not know: look properly.
		var probe struct {
			Type *string `json:"type"`
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			return nil, jsonError("", err)
		}
		if probe.Type == nil {
			if r.header == nil {
				r.done = true
				return nil, fmt.Errorf(`%w: the first record has no "type" field (JSON from another tool?)`, ErrNotCapture)
			}
			return nil, errors.New(`record has no "type" field`)
		}
		typ = *probe.Type
	}
	if r.header == nil && typ != record.TypeHeader {
		r.done = true
		return nil, fmt.Errorf("%w: the first record is a %q, not a header", ErrNotCapture, typ)
	}
	if r.summaryLine != 0 && typ != record.TypeHeader {
		return nil, fmt.Errorf("a %q record after the summary (line %d): the file holds more than one capture?", typ, r.summaryLine)
	}

	var (
		rec any
		err error
	)
	switch typ {
	case record.TypeHeader:
		return r.decodeHeader(line)
	case record.TypeTransition:
		// Both decoders write into what a pointer already points at: keep it.
		r.tr = record.Transition{Owners: r.tr.Owners[:0], PrevStateNs: r.tr.PrevStateNs}
		if r.fastTransition(line, &r.tr) {
			return &r.tr, nil
		}
		r.tr = record.Transition{Owners: r.tr.Owners[:0], PrevStateNs: r.tr.PrevStateNs}
		rec, err = &r.tr, json.Unmarshal(line, &r.tr)
	case record.TypeCall:
		r.call = record.Call{Owners: r.call.Owners[:0]}
		rec, err = &r.call, json.Unmarshal(line, &r.call)
	case record.TypeExit:
		r.exit = record.Exit{}
		rec, err = &r.exit, json.Unmarshal(line, &r.exit)
	case record.TypeFork:
		r.fork = record.Fork{}
		rec, err = &r.fork, json.Unmarshal(line, &r.fork)
	case record.TypeSnapshot:
		r.snap = record.Snapshot{Owners: r.snap.Owners[:0]}
		rec, err = &r.snap, json.Unmarshal(line, &r.snap)
	case record.TypeLost:
		r.lost = record.Lost{}
		rec, err = &r.lost, json.Unmarshal(line, &r.lost)
	case record.TypeLeak:
		r.leak = record.Leak{Owners: r.leak.Owners[:0]}
		rec, err = &r.leak, json.Unmarshal(line, &r.leak)
	case record.TypeBindConflict:
		r.bind = record.BindConflict{}
		rec, err = &r.bind, json.Unmarshal(line, &r.bind)
	case record.TypeConnectFail:
		r.connect = record.ConnectFail{}
		rec, err = &r.connect, json.Unmarshal(line, &r.connect)
	case record.TypeSummary:
		r.summary = record.Summary{}
		if err = json.Unmarshal(line, &r.summary); err == nil {
			r.summaryLine = r.line
		}
		rec = &r.summary
	default:
		return nil, fmt.Errorf("%w %q (written by a newer tcptrail?)", ErrUnknownType, typ)
	}
	if err != nil {
		return nil, jsonError(typ, err)
	}
	return rec, nil
}

func (r *Reader) decodeHeader(line []byte) (any, error) {
	if r.header != nil {
		// Two captures joined into one file: their clocks and sockets
		// have nothing to do with each other. Report the first.
		r.done = true
		return nil, errors.New("a second header: the file holds more than one capture; only the first is read")
	}
	r.hdr = record.Header{}
	if err := json.Unmarshal(line, &r.hdr); err != nil {
		r.done = true
		return nil, notCapture(jsonError(record.TypeHeader, err))
	}
	h := &r.hdr
	switch {
	case h.Tool != "" && h.Tool != "tcptrail":
		r.done = true
		return nil, fmt.Errorf("%w: written by %q", ErrNotCapture, h.Tool)
	case h.Schema > record.SchemaVersion:
		r.done = true
		return nil, fmt.Errorf("%w: it has schema %d, this tcptrail reads up to schema %d: use a newer tcptrail",
			ErrSchemaTooNew, h.Schema, record.SchemaVersion)
	case h.Schema < 1:
		r.done = true
		return nil, fmt.Errorf("%w: the header has no valid schema version (%d)", ErrNotCapture, h.Schema)
	}
	r.header = h
	return h, nil
}

// jsonError words a decoding error for a person reading a capture.
func jsonError(typ string, err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("%w: %v at byte %d", ErrNotJSON, syn, syn.Offset)
	}
	if typ == "" {
		// The probe's only failure besides syntax: not an object.
		return fmt.Errorf("%w object: %v", ErrNotJSON, err)
	}
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		if ute.Field == "" {
			return fmt.Errorf("bad %s record: %s where an object belongs", typ, ute.Value)
		}
		return fmt.Errorf("bad %s record: field %q holds %s, want %s", typ, jsonField(ute.Field), ute.Value, ute.Type)
	}
	return fmt.Errorf("bad %s record: %w", typ, err)
}

// jsonField turns encoding/json's path to a field, "Socket.lport" or
// "owners.pid", into the names a capture uses: embedded Go types (which
// start with a capital) are not part of the file.
func jsonField(path string) string {
	parts := strings.Split(path, ".")
	kept := parts[:0]
	for _, p := range parts {
		if p != "" && !(p[0] >= 'A' && p[0] <= 'Z') {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, ".")
}

// fastType returns the type of a line written by tcptrail's writer, which
// puts "type" first, without decoding it twice. It returns "" when the line
// does not start that way or the type is not one it knows.
func fastType(line []byte) string {
	const prefix = `{"type":"`
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return ""
	}
	rest := line[len(prefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return ""
	}
	// A switch on string(bytes) compares without allocating.
	switch string(rest[:end]) {
	case record.TypeTransition:
		return record.TypeTransition
	case record.TypeCall:
		return record.TypeCall
	case record.TypeSnapshot:
		return record.TypeSnapshot
	case record.TypeHeader:
		return record.TypeHeader
	case record.TypeExit:
		return record.TypeExit
	case record.TypeFork:
		return record.TypeFork
	case record.TypeLost:
		return record.TypeLost
	case record.TypeLeak:
		return record.TypeLeak
	case record.TypeBindConflict:
		return record.TypeBindConflict
	case record.TypeConnectFail:
		return record.TypeConnectFail
	case record.TypeSummary:
		return record.TypeSummary
	}
	return ""
}

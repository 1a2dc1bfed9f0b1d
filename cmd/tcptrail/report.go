package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/report"
)

const reportHelp = `NAME
    tcptrail report - tell the story of a capture

SYNOPSIS
    tcptrail report FILE [--html OUT] [--port PORT]... [--pid PID]... [--state STATE]...
                         [--leaks-only] [--since WHEN] [--until WHEN]

DESCRIPTION
    Reads a capture written by 'tcptrail trace -o FILE' (JSON Lines; '-' reads
    standard input) and tells, for each connection, what its two ends went
    through: the client's socket and the server's accepted socket side by side
    on one time axis, each state with the time spent in it, the cause of each
    change, the process that owned the socket and the one the kernel ran in.
    Then the listeners, the sockets that never connected, and the diagnoses:
    CLOSE_WAIT leaks, bind conflicts and failed connects. Needs no privileges.

    A capture cut short (tcptrail killed or crashed) has no summary record at
    its end: the report says so and shows everything up to there. A damaged
    capture (a line cut off, a line that is not JSON, an unknown record) is
    reported as far as it can be read, then each problem is named by its line.

    With --html, writes one self-contained HTML page instead: a bar per socket
    coloured by state on a shared time axis, the two ends of each connection
    paired, causes marked on the bars, diagnoses highlighted, the sequence
    diagram of a connection on click. It needs no network access and pages
    through large captures.

OPTIONS
%s
    A connection is shown when either end matches every option given; both
    ends are always shown. WHEN is an RFC 3339 time (2025-11-24T05:30:01Z) or
    a duration from the capture's start (1.5s, 2m).

EXIT STATUS
    0   the report was written, including that of a capture cut short
    1   the report could not be written (e.g. the --html file)
    2   bad options, a file that is not a capture, or a damaged capture (the
        report of what could be read is written first)

EXAMPLES
    tcptrail report story.jsonl
    tcptrail report story.jsonl --html story.html
    tcptrail report story.jsonl --port 10001 --leaks-only
    tcptrail report story.jsonl --state CLOSE_WAIT --since 1s --until 5s
    tcptrail trace --port 7070 --json | tcptrail report -
`

type reportFlags struct {
	file      string
	html      string
	ports     portList
	pids      pidList
	states    stateList
	leaksOnly bool
	since     whenValue
	until     whenValue
}

func parseReportFlags(args []string, stdout io.Writer) (*reportFlags, error) {
	f := &reportFlags{}
	fs := pflag.NewFlagSet("report", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, help is printed below
	fs.StringVar(&f.html, "html", "", "write a self-contained HTML page to `OUT` instead of text ('-': stdout)")
	fs.VarP(&f.ports, "port", "p", "connections with this local or remote `PORT`: 7070,10001 (repeatable)")
	fs.Var(&f.pids, "pid", "connections that process `PID` owned or ran a transition of (repeatable)")
	fs.Var(&f.states, "state", "connections with a socket that was ever in `STATE`, e.g. CLOSE_WAIT (repeatable)")
	fs.BoolVar(&f.leaksOnly, "leaks-only", false, "only connections that leaked (stuck in CLOSE_WAIT)")
	fs.Var(&f.since, "since", "only what happened from `WHEN` on")
	fs.Var(&f.until, "until", "only what happened up to `WHEN`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, reportHelp, indent(fs.FlagUsages(), "    "))
			return nil, err
		}
		return nil, usageErrorf("report: %v (see tcptrail report --help)", err)
	}
	switch fs.NArg() {
	case 0:
		return nil, usageErrorf("report: which capture? Usage: tcptrail report FILE [flags]")
	case 1:
		f.file = fs.Arg(0)
	default:
		return nil, usageErrorf("report: unexpected argument %q: one capture at a time", fs.Arg(1))
	}
	return f, nil
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// runReport is 'tcptrail report'.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseReportFlags(args, stdout)
	if err != nil {
		return err
	}
	in, name := io.Reader(os.Stdin), "standard input"
	if f.file != "-" {
		file, err := os.Open(f.file)
		if err != nil {
			return usageErrorf("report: cannot read the capture: %v", err)
		}
		defer file.Close()
		in, name = file, f.file
	}
	c, loadErr := report.Load(ctxReader{ctx, in})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if c.Records == 0 || errors.Is(loadErr, capture.ErrNotCapture) || errors.Is(loadErr, capture.ErrSchemaTooNew) {
		// Nothing to report: say why.
		return usageErrorf("report: %s: %v", name, firstLine(loadErr))
	}
	sel, err := c.Select(report.Filter{
		Ports:     f.ports.ports,
		PIDs:      f.pids,
		States:    f.states,
		LeaksOnly: f.leaksOnly,
		Since:     f.since.when,
		Until:     f.until.when,
	})
	if err != nil {
		return usageErrorf("report: %v", err)
	}

	if f.html != "" {
		if err := writeHTML(f.html, c, sel, filepath.Base(name), stdout); err != nil {
			return err
		}
		if f.html != "-" {
			fmt.Fprintf(stderr, "tcptrail: wrote %s: %s, %s\n", f.html,
				count(len(sel.Conns), "connection", "connections"), count(len(sel.Diagnoses), "diagnosis", "diagnoses"))
		}
	} else if err := report.WriteText(stdout, c, sel, filepath.Base(name)); err != nil {
		return fmt.Errorf("report: write: %w", err)
	}

	if loadErr != nil {
		return usageErrorf("report: %s is damaged; the report covers what could be read:\n  %s",
			name, strings.ReplaceAll(loadErr.Error(), "\n", "\n  "))
	}
	if !c.Complete() {
		fmt.Fprintf(stderr, "tcptrail: warning: %s has no summary record: the capture was cut short after line %d\n", name, c.Lines)
	}
	return nil
}

func writeHTML(path string, c *report.Capture, sel *report.Selection, name string, stdout io.Writer) error {
	if path == "-" {
		return report.WriteHTML(stdout, c, sel, name, report.HTMLOptions{})
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: --html: %w", err)
	}
	if err := report.WriteHTML(out, c, sel, name, report.HTMLOptions{}); err != nil {
		out.Close()
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return nil
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// firstLine is the first of an error's lines: a file that is not a capture
// is said in one.
func firstLine(err error) string {
	if err == nil {
		return "the file holds no records"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// ctxReader stops reading once ctx is done: a report of a huge capture
// stops at Ctrl-C.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// pidList is a pflag.Value for --pid: comma-separated or repeated pids.
type pidList []uint32

func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(value string) error {
	for _, part := range strings.Split(value, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(part), 10, 32)
		if err != nil || n == 0 || n > 1<<22 {
			return fmt.Errorf("%q is not a process id", part)
		}
		*p = append(*p, uint32(n))
	}
	return nil
}

func (p *pidList) Type() string { return "pids" }

// stateList is a pflag.Value for --state: TCP state names, as the kernel
// spells them or with dashes, any case.
type stateList []event.State

func (s *stateList) String() string {
	names := make([]string, len(*s))
	for i, v := range *s {
		names[i] = v.String()
	}
	return strings.Join(names, ",")
}

func (s *stateList) Set(value string) error {
	for _, part := range strings.Split(value, ",") {
		st, err := report.ParseStateName(part)
		if err != nil {
			return err
		}
		*s = append(*s, st)
	}
	return nil
}

func (s *stateList) Type() string { return "states" }

// whenValue is a pflag.Value for --since and --until.
type whenValue struct{ when report.When }

func (w *whenValue) String() string { return w.when.String() }

func (w *whenValue) Set(value string) error {
	when, err := report.ParseWhen(value)
	if err != nil {
		return err
	}
	w.when = when
	return nil
}

func (w *whenValue) Type() string { return "when" }

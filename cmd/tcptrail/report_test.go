package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// story is the story's capture: the buggy client's leak and failed bind.
const story = "../../tracer/report/testdata/story.jsonl"

// runReportCmd runs 'tcptrail report args...' in-process.
func runReportCmd(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin != "" {
		f, err := os.CreateTemp(t.TempDir(), "stdin")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(stdin)
		f.Seek(0, 0)
		saved := os.Stdin
		os.Stdin = f
		defer func() { os.Stdin = saved; f.Close() }()
	}
	code := run(ctx, append([]string{"report"}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func storyLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(story)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(string(b), "\n")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReportStory(t *testing.T) {
	r := runReportCmd(t, context.Background(), "", story)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"━━ Connection 1: 127.0.0.1:10001 → 127.0.0.1:7070 · LEAK, BIND CONFLICT",
		"● CLOSE_WAIT    for 2.49968s", "ran in server[4100]", "✕ client[4200] exited",
		"━━ Diagnoses (2)", "bind 127.0.0.1:10001 by client[4200] fd 4 failed: EADDRINUSE",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestReportFilters(t *testing.T) {
	tests := []struct {
		args []string
		want []string // in the output
		not  []string // not in it
	}{
		{[]string{"--port", "10001", "--leaks-only"}, []string{"port 10001, leaks only: 1 connection, 0 listeners", "━━ Connection 1"}, []string{"━━ Listeners"}},
		{[]string{"-p", "9999"}, []string{"port 9999: 0 connections"}, []string{"━━ Connection"}},
		{[]string{"--state", "time-wait"}, []string{"ever in TIME_WAIT: 1 connection"}, nil},
		{[]string{"--state", "CLOSING"}, []string{"ever in CLOSING: 0 connections"}, []string{"━━ Connection"}},
		{[]string{"--pid", "4100"}, []string{"pid 4100: 1 connection, 1 listener"}, nil},
		{[]string{"--since", "1s", "--until", "2.5s"}, []string{"from +1.000000000 to +2.500000000", "⋮ CLOSE_WAIT since +0.500330000"}, []string{"● SYN_SENT"}},
		{[]string{"--since", "2025-11-24T05:30:02Z"}, []string{"from +2.000000000 to end"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runReportCmd(t, context.Background(), "", append([]string{story}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(r.stdout, n) {
					t.Errorf("output has %q", n)
				}
			}
		})
	}
}

func TestReportHTML(t *testing.T) {
	out := filepath.Join(t.TempDir(), "story.html")
	r := runReportCmd(t, context.Background(), "", story, "--html", out)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "wrote "+out+": 1 connection, 2 diagnoses") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	page, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<!DOCTYPE html>", `"title":"story.jsonl"`, `"cookie":"8193"`, "Content-Security-Policy"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
	r = runReportCmd(t, context.Background(), "", story, "--html", "-")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "<!DOCTYPE html>") {
		t.Errorf("--html -: exit %d, stdout starts %.40q", r.code, r.stdout)
	}
	r = runReportCmd(t, context.Background(), "", story, "--html", "/nonexistent/dir/x.html")
	if r.code != 1 || !strings.Contains(r.stderr, "--html") {
		t.Errorf("unwritable --html: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestReportStdin(t *testing.T) {
	b, _ := os.ReadFile(story)
	r := runReportCmd(t, context.Background(), string(b), "-")
	if r.code != 0 || !strings.Contains(r.stdout, "tcptrail report of standard input") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestReportBadUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "which capture?"},
		{[]string{story, story}, "unexpected argument"},
		{[]string{story, "--bogus"}, "unknown flag: --bogus"},
		{[]string{story, "--port", "0"}, "port 0 is out of range"},
		{[]string{story, "--pid", "x"}, `"x" is not a process id`},
		{[]string{story, "--state", "DANCING"}, `unknown TCP state "DANCING"`},
		{[]string{story, "--since", "yesterday"}, "is neither an RFC 3339 time"},
		{[]string{story, "--since", "3s", "--until", "1s"}, "the time window is empty"},
		{[]string{"/nonexistent.jsonl"}, "cannot read the capture"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runReportCmd(t, context.Background(), "", tt.args...)
			checkCleanError(t, r, tt.want)
			if r.stdout != "" {
				t.Errorf("output on bad usage: %q", r.stdout)
			}
		})
	}
}

// Bad files: a clear error naming the line, a partial report where there
// is something to report, exit code 2, never a panic.
func TestReportBadFiles(t *testing.T) {
	ls := storyLines(t)
	tests := []struct {
		name    string
		content string
		want    string // on stderr
		partial bool   // a report is written first
	}{
		{"not JSON", "hello world\n", "line 1: not a tcptrail capture: not JSON", false},
		{"another tool's JSON", `{"level":"info","msg":"x"}` + "\n", `the first record has no "type" field`, false},
		{"newer schema", strings.Replace(strings.Join(ls, ""), `"schema":1`, `"schema":99`, 1), "it has schema 99, this tcptrail reads up to schema 2", false},
		{"empty", "", "the file is empty", false},
		{"truncated last line", strings.Join(ls[:12], "") + ls[12][:40], "line 13: the last line is cut short", true},
		{"unknown record type", strings.Join(ls[:3], "") + `{"type":"wormhole"}` + "\n" + strings.Join(ls[3:], ""), `line 4: unknown record type "wormhole"`, true},
		{"garbage line", strings.Join(ls[:3], "") + "}{\n" + strings.Join(ls[3:], ""), "line 4: not JSON", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runReportCmd(t, context.Background(), "", writeFile(t, "c.jsonl", tt.content))
			checkCleanError(t, r, tt.want)
			if tt.partial != strings.Contains(r.stdout, "━━ Connection 1") {
				t.Errorf("partial report written: %v, want %v\n%s", !tt.partial, tt.partial, r.stdout)
			}
			if tt.partial && !strings.Contains(r.stderr, "the report covers what could be read") {
				t.Errorf("stderr does not say the report is partial: %q", r.stderr)
			}
		})
	}
}

// A capture cut short between records (tcptrail killed) is reported in
// full, with the missing summary said, and exit 0.
func TestReportNoSummary(t *testing.T) {
	ls := storyLines(t)
	r := runReportCmd(t, context.Background(), "", writeFile(t, "killed.jsonl", strings.Join(ls[:len(ls)-2], "")))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "has no summary record: the capture was cut short after line 22") {
		t.Errorf("stderr %q", r.stderr)
	}
	if !strings.Contains(r.stdout, "CUT SHORT") || !strings.Contains(r.stdout, "━━ Connection 1") {
		t.Errorf("report does not say it was cut short, or lacks the connection:\n%s", r.stdout)
	}
}

func TestReportHelp(t *testing.T) {
	r := runReportCmd(t, context.Background(), "", "--help")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "--leaks-only", "--since WHEN", "EXIT STATUS", "EXAMPLES"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	for i, l := range strings.Split(r.stdout, "\n") {
		if len([]rune(l)) > 120 {
			t.Errorf("help line %d is %d wide", i+1, len([]rune(l)))
		}
	}
}

// Ctrl-C while reading stops the report without writing a partial one.
func TestReportCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := runReportCmd(t, ctx, "", story)
	if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "context canceled") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// The built binary: exit codes as a shell sees them.
func TestReportBinary(t *testing.T) {
	if r := runBinary(t, exec.Command(binary, "report", story, "--port", "10001")); r.code != 0 || !strings.Contains(r.stdout, "━━ Connection 1") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	checkCleanError(t, runBinary(t, exec.Command(binary, "report", "/etc/hostname")), "not a tcptrail capture")
}

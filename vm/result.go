package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// The demo passes when it exits 0 and tcptrail explained the story: the
// failed bind, the leak, and its summary on exit.
var demoChecks = []struct{ what, re string }{
	{"BIND diagnosis", `BIND bind 127\.0\.0\.1:10001 failed \(EADDRINUSE\)`},
	{"LEAK line", `LEAK `},
	{"summary", `\d+ events, \d+ transitions, \d+ sockets in `},
}

type result struct {
	kernel
	pkgVersion string
	err        error // the guest did not run to the end
	wall, boot time.Duration
	dir        string // console.log, qemu.cmd, results.tar, out/ (the guest's /out)
	uname      string

	demoRC     string
	demoMissed []string // demoChecks not found
	demoLog    string

	pkgs []pkgResult
}

type pkgResult struct {
	pkg                   string
	rc                    string
	passed, failed, skipd int
	failures              []string // top-level tests that failed, with their output
	log                   string   // the whole output as text, for a failure outside any test
}

func (r *result) demoOK() bool { return r.demoRC == "0" && len(r.demoMissed) == 0 }

func (r *result) ok() bool {
	if r.err != nil || !r.demoOK() || len(r.pkgs) != len(testPackages) {
		return false
	}
	for _, p := range r.pkgs {
		if p.rc != "0" || p.failed > 0 {
			return false
		}
	}
	return true
}

// collect reads what the guest sent back, if anything.
func (r *result) collect() {
	out := filepath.Join(r.dir, "out")
	if err := untar(filepath.Join(r.dir, "results.tar"), out); err != nil {
		if r.err == nil {
			r.err = err
		}
		return
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(out, name))
		return strings.TrimSpace(string(b))
	}
	r.uname = read("uname")
	r.demoRC = read("demo.rc")
	r.demoLog = read("demo.log")
	for _, c := range demoChecks {
		if !regexp.MustCompile(c.re).MatchString(r.demoLog) {
			r.demoMissed = append(r.demoMissed, c.what)
		}
	}
	for _, pkg := range testPackages {
		name := strings.ReplaceAll(strings.TrimPrefix(pkg, "./"), "/", ".")
		p := pkgResult{pkg: pkg, rc: read("test/" + name + ".rc")}
		if p.rc == "" {
			continue // never ran: the count of packages says so
		}
		p.parse(filepath.Join(out, "test", name+".log"))
		r.pkgs = append(r.pkgs, p)
	}
}

// parse counts top-level tests from the -test.v=test2json output, through
// `go tool test2json`, and keeps each failed test's output.
func (p *pkgResult) parse(file string) {
	raw, err := os.ReadFile(file)
	if err != nil {
		p.log = err.Error()
		return
	}
	cmd := exec.Command("go", "tool", "test2json", "-p", p.pkg)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		p.log = fmt.Sprintf("go tool test2json: %v\n%s", err, raw)
		return
	}
	output := map[string]*strings.Builder{} // top-level test -> its and its subtests' output
	var all strings.Builder
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var ev struct{ Action, Test, Output string }
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			p.log = fmt.Sprintf("test2json output: %v", err)
			return
		}
		top, _, sub := strings.Cut(ev.Test, "/")
		if ev.Output != "" {
			all.WriteString(ev.Output)
			if top != "" {
				if output[top] == nil {
					output[top] = &strings.Builder{}
				}
				output[top].WriteString(ev.Output)
			}
		}
		if top == "" || sub {
			continue
		}
		switch ev.Action {
		case "pass":
			p.passed++
		case "skip":
			p.skipd++
		case "fail":
			p.failed++
			p.failures = append(p.failures, output[top].String())
		}
	}
	p.log = all.String()
}

// summary is the kernel's one line.
func (r *result) summary() string {
	release := r.uname
	if release == "" {
		release = "?"
	}
	s := fmt.Sprintf("%-10s %-5s %-22s %-12s", r.name, r.arch, release, r.pkgVersion)
	if r.demoRC == "" && len(r.pkgs) == 0 { // nothing came back
		return s + fmt.Sprintf(" FAILED: %s  %v", firstLine(r.err), r.wall.Round(time.Second))
	}
	demo := "demo ok"
	if !r.demoOK() {
		demo = "demo FAILED"
	}
	var pass, fail, skip int
	for _, p := range r.pkgs {
		pass, fail, skip = pass+p.passed, fail+p.failed, skip+p.skipd
	}
	s += fmt.Sprintf(" %-11s tests: %3d passed %3d failed %3d skipped", demo, pass, fail, skip)
	if n := len(testPackages) - len(r.pkgs); n > 0 {
		s += fmt.Sprintf(", %d packages did not run", n)
	}
	if r.err != nil {
		s += " (" + firstLine(r.err) + ")"
	}
	return s + fmt.Sprintf("  %v (guest %v)", r.wall.Round(time.Second), r.boot.Round(time.Second))
}

// printDetails shows what failed: the error, the demo's output, and each
// failed test's (or a failed package's tail, when no test says why).
func (r *result) printDetails(w io.Writer) {
	fmt.Fprintf(w, "\n===== %s (%s, %s %s)\n", r.name, r.arch, r.uname, r.pkgVersion)
	if r.err != nil {
		fmt.Fprintf(w, "ERROR: %v\n", r.err)
		if r.boot > 0 {
			console := filepath.Join(r.dir, "console.log")
			fmt.Fprintf(w, "--- %s, last lines:\n%s\n", console, tail(readFile(console), 30))
		}
	}
	if r.demoRC != "" {
		if r.demoOK() {
			fmt.Fprintln(w, "demo: ok")
		} else {
			fmt.Fprintf(w, "demo: FAILED: exit status %s, missing: %s\n--- demo output, last lines:\n%s\n",
				r.demoRC, strings.Join(r.demoMissed, ", "), tail(r.demoLog, 25))
		}
	}
	for _, p := range r.pkgs {
		fmt.Fprintf(w, "%s: %d passed, %d failed, %d skipped, exit status %s\n", p.pkg, p.passed, p.failed, p.skipd, p.rc)
		for _, f := range p.failures {
			fmt.Fprint(w, indent(tail(f, 40)))
		}
		if p.rc != "0" && p.failed == 0 {
			fmt.Fprint(w, indent(tail(p.log, 40)))
		}
	}
	fmt.Fprintf(w, "===== %s: %s\n", r.name, map[bool]string{true: "PASS", false: "FAIL"}[r.ok()])
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// Command tcptrail shows, live and exactly, what every TCP socket of chosen
// ports goes through, and explains the bugs that hide there.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// usageError marks errors in what the user typed: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

const topUsage = `tcptrail: what every TCP socket of chosen ports goes through, and why.

Usage:
  tcptrail trace  [flags]        trace live (needs root or CAP_BPF+CAP_PERFMON)
  tcptrail watch  [flags]        run all the time: diagnoses as JSON Lines, Prometheus metrics
  tcptrail report FILE [flags]   tell the story of a capture (no privileges needed)
  tcptrail why PORT|ADDR:PORT    who holds this local address now, and why (no BPF)
  tcptrail version

Run 'tcptrail COMMAND --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the process exit code: 0 on
// success, 2 for bad input or missing privileges, 1 for other failures.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "trace":
		err = runTrace(ctx, args[1:], stdout, stderr)
	case "watch":
		err = runWatch(ctx, args[1:], stdout, stderr)
	case "report":
		err = runReport(ctx, args[1:], stdout, stderr)
	case "why":
		err = runWhy(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "tcptrail %s\n", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage)
	default:
		err = usageErrorf("unknown command %q (want trace, watch, report, why or version)", args[0])
	}
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	var status exitStatus
	if errors.As(err, &status) {
		return int(status)
	}
	fmt.Fprintf(stderr, "tcptrail: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

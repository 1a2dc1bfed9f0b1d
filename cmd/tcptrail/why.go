package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

const whyUsage = `Usage: tcptrail why PORT|ADDR:PORT [--json]

Who holds this local address right now, and why: every socket bound to it,
in any state and any network namespace, with its owners (process, fd,
container) and one plain sentence each. No tracing history and no BPF: it
asks the kernel's socket table (sock_diag) and /proc, so it also runs where
tracing cannot. As root it sees every namespace and every process's fds.

Exit status: 0 when something holds the address, 1 when nothing does, 2 on
bad input.

Examples:
  sudo tcptrail why 10001
  sudo tcptrail why 127.0.0.1:10001
  sudo tcptrail why '[::1]:8080' --json

Flags:
`

// exitStatus ends a command with a status and no message.
type exitStatus int

func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// runWhy is 'tcptrail why'.
func runWhy(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	fs := newFlagSet("why", whyUsage, stderr)
	fs.BoolVar(&asJSON, "json", false, "one JSON object per socket (the capture's holder records)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageErrorf("why: %v", err)
	}
	if fs.NArg() != 1 {
		return usageErrorf("why: want one PORT or ADDR:PORT (see tcptrail why --help)")
	}
	want, err := parseLocal(fs.Arg(0))
	if err != nil {
		return usageErrorf("why: %v", err)
	}
	held, failed, err := tracer.HoldersNow(want)
	if err != nil {
		return fmt.Errorf("ask the socket table: %w", err)
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "tcptrail: %d socket-table queries failed: some namespaces could not be asked\n", failed)
	}
	if limits := socktable.Limits(); limits != "" {
		fmt.Fprintf(stderr, "tcptrail: %s\n", limits)
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for i := range held {
		h := &held[i]
		if asJSON {
			if err := enc.Encode(record.Holder{
				Socket: record.SocketOf(h.Cookie, h.NetNS, h.Family, h.Local, h.Remote),
				State:  h.State.String(), StateNs: h.StateNs, StateAtLeast: h.StateAtLeast,
				Owners: record.Owners(h.Owners), Why: h.Why(),
			}); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(stdout, sentence(h))
	}
	if len(held) == 0 {
		if !asJSON {
			fmt.Fprintf(stdout, "nothing holds %s\n", fs.Arg(0))
		}
		return exitStatus(1)
	}
	return nil
}

// sentence says in one line what holds the address and why, and in which
// network namespace.
func sentence(h *tracer.Held) string {
	return fmt.Sprintf("%s [netns %d]", h.Sentence(), h.NetNS)
}

// parseLocal reads PORT (any local address) or ADDR:PORT.
func parseLocal(s string) (netip.AddrPort, error) {
	if p, err := strconv.ParseUint(s, 10, 16); err == nil {
		if p == 0 {
			return netip.AddrPort{}, fmt.Errorf("port 0 is not a port")
		}
		return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(p)), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is neither a port (1-65535) nor ADDR:PORT", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("port 0 is not a port")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

#!/bin/sh
# The story, traced: a server that accepts and closes at once, a client that
# dials from the fixed local address 127.0.0.1:10001 and forgets to close
# (its retry fails with "address already in use"), then the same client with
# the fix (--close), whose retry works. tcptrail traces ports 7070 and 10001
# throughout and explains what it sees.
#
# Usage: demo/run.sh   (as root; `make demo` builds the binaries first)
set -eu

BIN=${BIN:-bin}
OUT=${OUT:-out}
mkdir -p "$OUT"
ready="$OUT/tracer.ready"
server_ready="$OUT/server.ready"
rm -f "$ready" "$server_ready"

tracer=
server=
cleanup() {
	[ -n "$server" ] && kill "$server" 2>/dev/null || true
	[ -n "$tracer" ] && kill -INT "$tracer" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# wait_for FILE PID WHAT: wait up to 20 s for FILE, failing early if PID dies.
wait_for() {
	i=0
	while [ ! -e "$1" ]; do
		if ! kill -0 "$2" 2>/dev/null; then
			echo "demo: $3 exited before it was ready" >&2
			exit 1
		fi
		i=$((i + 1))
		if [ "$i" -gt 200 ]; then
			echo "demo: $3 not ready after 20s" >&2
			exit 1
		fi
		sleep 0.1
	done
}

"$BIN/tcptrail" trace --port 7070,10001 -o "$OUT/story.jsonl" --ready-file "$ready" &
tracer=$!
wait_for "$ready" "$tracer" "tcptrail"

"$BIN/demo-server" -ready-file "$server_ready" &
server=$!
wait_for "$server_ready" "$server" "demo-server"

echo "demo: --- buggy client: never calls Close() ---" >&2
if "$BIN/demo-client"; then buggy=0; else buggy=$?; fi
echo "demo: --- fixed client: --close ---" >&2
if "$BIN/demo-client" -close; then fixed=0; else fixed=$?; fi

# Let the last transitions reach the screen, then stop everything.
sleep 0.3
kill "$server"
wait "$server" 2>/dev/null || true
server=
kill -INT "$tracer"
wait "$tracer"
tracer=

echo
if [ "$buggy" -ne 0 ]; then
	echo "buggy client: its retry failed (exit status $buggy): see the BIND and LEAK lines above"
else
	echo "buggy client: unexpectedly, its retry worked"
fi
if [ "$fixed" -eq 0 ]; then
	echo "fixed client: both dials worked, no socket left in CLOSE_WAIT"
else
	echo "fixed client: failed (exit status $fixed)"
fi
echo "capture: $OUT/story.jsonl (tcptrail report $OUT/story.jsonl)"

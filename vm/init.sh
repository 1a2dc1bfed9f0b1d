#!/bin/busybox sh
# PID 1 of a kernel-matrix guest (see vm/main.go). It gives tcptrail and its
# tests what a normal system has (proc, sysfs, devices, a tmpfs /tmp, a
# loopback with 127.0.0.1 and ::1, the sock_diag modules), runs the demo and
# the compiled test packages, and sends /out back to the host as a tar
# through the results port. The console only shows progress; every step's
# output is in /out.
/bin/busybox --install -s
# CI=true: the privileged tests must load the programs, not skip.
# TCPTRAIL_TEST_BINDIR: the tests use the prebuilt binaries (no Go here).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp CI=true TCPTRAIL_TEST_BINDIR=/src/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# cgroup v2, as systemd mounts it: the container tests make cgroups there.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /out/test
ip link set lo up

log() { echo "guest: $*" | tee -a /out/init.log; }

uname -r >/out/uname
log "kernel $(uname -r) $(uname -m), $(nproc) CPUs"

# Modules are numbered in load order, dependencies first. A failure is
# logged and not fatal: the tests then say what is missing.
for m in /modules/*.ko; do
	[ -e "$m" ] || continue
	insmod "$m" 2>&1 | tee -a /out/init.log
done

log "demo"
cd /src
t0=$(date +%s)
timeout 120 env BIN=/src/bin OUT=/out/demo sh demo/run.sh >/out/demo.log 2>&1
echo $? >/out/demo.rc
log "demo exit status $(cat /out/demo.rc) after $(($(date +%s) - t0))s"
# A demo stopped by the timeout may leave its programs behind, holding
# its ports and probes: not the tests' business.
killall -q -9 tcptrail demo-server demo-client

# Each test binary sits in its package's directory (the tests open files
# relative to it) and runs there. -test.v=test2json keeps the output exact
# for `go tool test2json` on the host.
for t in $(find /src -name '*.test' | sort); do
	pkg=${t%/*}
	pkg=${pkg#/src/}
	name=$(echo "$pkg" | tr / .)
	log "test ./$pkg"
	t0=$(date +%s)
	(cd "/src/$pkg" && "$t" -test.v=test2json -test.count=1 -test.timeout="${test_timeout:-4m}" \
		-test.skip "$(cat /src/test-skip)") >"/out/test/$name.log" 2>&1
	echo $? >"/out/test/$name.rc"
	log "test ./$pkg exit status $(cat "/out/test/$name.rc") after $(($(date +%s) - t0))s"
done

dmesg >/out/dmesg
log "sending results"
# A tty would turn \n into \r\n: make the port raw (a virtio port is no tty).
stty -F "$results" raw -echo 2>/dev/null
tar -c -f "$results" -C /out .
sync
poweroff -f

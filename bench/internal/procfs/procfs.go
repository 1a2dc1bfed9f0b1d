// Package procfs reads what the benchmarks measure of a process from
// /proc: its CPU time and its memory and thread counts.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const ClkTck = 100

// CPU is the process's utime+stime so far, all threads, dead ones too.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm, field 2, may hold spaces: count fields after its closing paren.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / ClkTck, nil
}

// Status holds the memory lines of /proc/PID/status, in KiB.
type Status struct {
	HWM, RSS, Anon, File, Shmem int64
	Threads                     int64
}

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (Status, error) {
	var s Status
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			s.HWM = n
		case "VmRSS":
			s.RSS = n
		case "RssAnon":
			s.Anon = n
		case "RssFile":
			s.File = n
		case "RssShmem":
			s.Shmem = n
		case "Threads":
			s.Threads = n
		}
	}
	return s, nil
}

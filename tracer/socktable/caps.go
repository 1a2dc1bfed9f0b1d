package socktable

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits says what this process cannot see for lack of capabilities, or ""
// when it sees everything: CAP_SYS_ADMIN enters other network namespaces,
// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH read other users' /proc/PID/fd.
// Capabilities, not the user id, decide: a service may hold them as an
// unprivileged user.
func Limits() string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		root := os.Geteuid() == 0
		has = func(uint) bool { return root }
	}
	var missing []string
	if !has(unix.CAP_SYS_ADMIN) {
		missing = append(missing, "only this network namespace (no CAP_SYS_ADMIN)")
	}
	if !has(unix.CAP_SYS_PTRACE) || !has(unix.CAP_DAC_READ_SEARCH) {
		missing = append(missing, "only the owners whose fds this user may read (no CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)")
	}
	return strings.Join(missing, "; ")
}

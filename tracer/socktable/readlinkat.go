package socktable

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// readlinkat is readlinkat(2) on a NUL-terminated name: unix.Readlinkat
// takes a string, which costs an allocation per call to terminate.
func readlinkat(dir int, name *byte, buf []byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dir), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

package socktable

import "testing"

// BenchmarkOwnersOf scans every fd of this host for one inode nothing
// holds: the cost of a scan grows with the host's fds (run it beside a
// process holding many sockets to see a busy host's).
func BenchmarkOwnersOf(b *testing.B) {
	for b.Loop() {
		OwnersOf(map[uint32]bool{1: true})
	}
}

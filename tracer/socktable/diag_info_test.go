package socktable

import (
	"encoding/binary"
	"testing"
)

// rtattr builds one netlink attribute, padded to 4 bytes.
func rtattr(typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestLastAckRecv(t *testing.T) {
	info := make([]byte, 232) // struct tcp_info as 6.x fills it
	binary.NativeEndian.PutUint32(info[tcpInfoLastAckRecv:], 4321)
	other := rtattr(1, []byte{1, 2, 3}) // INET_DIAG_MEMINFO-like, odd length
	for _, c := range []struct {
		name  string
		attrs []byte
		want  int64
	}{
		{"info only", rtattr(inetDiagInfo, info), 4321},
		{"after another attribute", append(other, rtattr(inetDiagInfo, info)...), 4321},
		{"old kernel's short tcp_info", rtattr(inetDiagInfo, info[:tcpInfoLastAckRecv]), -1},
		{"no info", other, -1},
		{"truncated", rtattr(inetDiagInfo, info)[:30], -1},
		{"empty", nil, -1},
	} {
		if got := lastAckRecv(c.attrs); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

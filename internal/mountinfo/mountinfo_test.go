package mountinfo

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:                     "/plain",
		`/a\040b`:                    "/a b",
		`/a\011b`:                    "/a\tb",
		`/a\134b`:                    `/a\b`,
		`/a\012`:                     "/a\n",
		`/short\04`:                  `/short\04`,
		`/bad\089`:                   `/bad\089`,
		`/not\999octal\011tab`:       "/not\\999octal\ttab",
		`/tab\011and\012newline\040`: "/tab\tand\nnewline ",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	const text = `22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
40 30 0:37 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw
41 22 0:12 / /sys/kernel/tracing rw,relatime shared:12 - tracefs nodev rw
412 29 0:4 net:[4026532500] /run/netns/with\040space rw shared:230 - nsfs nsfs rw
not a mountinfo line
99 40 0:37 /system.slice /mnt/part rw - cgroup2 cgroup2 rw
`
	got, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Root: "/", Point: "/sys", FSType: "sysfs"},
		{Root: "/", Point: "/sys/fs/cgroup", FSType: "cgroup2"},
		{Root: "/", Point: "/sys/kernel/tracing", FSType: "tracefs"},
		{Root: "net:[4026532500]", Point: "/run/netns/with space", FSType: "nsfs"},
		{Root: "/system.slice", Point: "/mnt/part", FSType: "cgroup2"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Parse:\n got %+v\nwant %+v", got, want)
	}
}

// TestReadSelf reads this process's own mounts: the root is mounted.
func TestReadSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc here")
	}
	mounts, err := Read("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mounts, func(m Mount) bool { return m.Point == "/" }) {
		t.Fatalf("no mount on / among %d mounts", len(mounts))
	}
}

package container

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		path    string // Path()
		id      string
		unified string // "-" when there is no "0::" line
	}{
		{
			name:    "v2 host process",
			file:    "0::/system.slice/nginx.service\n",
			path:    "/system.slice/nginx.service",
			unified: "/system.slice/nginx.service",
		},
		{
			name:    "v2 root",
			file:    "0::/\n",
			path:    "/",
			unified: "/",
		},
		{
			name:    "v2 docker systemd",
			file:    "0::/system.slice/docker-" + id1 + ".scope\n",
			path:    "/system.slice/docker-" + id1 + ".scope",
			id:      id1,
			unified: "/system.slice/docker-" + id1 + ".scope",
		},
		{
			name:    "v2 kubernetes containerd",
			file:    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope\n",
			path:    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope",
			id:      id1,
			unified: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope",
		},
		{
			name:    "v2 removed cgroup",
			file:    "0::/system.slice/docker-" + id1 + ".scope (deleted)\n",
			path:    "/system.slice/docker-" + id1 + ".scope",
			id:      id1,
			unified: "/system.slice/docker-" + id1 + ".scope",
		},
		{
			name:    "v2 path with a colon",
			file:    "0::/system.slice/containerd.service/kubepods-burstable-pod4ed02c0b_0df8_4d14_a30e_fd589ee4143a.slice:cri-containerd:" + id3 + "\n",
			path:    "/system.slice/containerd.service/kubepods-burstable-pod4ed02c0b_0df8_4d14_a30e_fd589ee4143a.slice:cri-containerd:" + id3,
			id:      id3,
			unified: "/system.slice/containerd.service/kubepods-burstable-pod4ed02c0b_0df8_4d14_a30e_fd589ee4143a.slice:cri-containerd:" + id3,
		},
		{
			name: "v1 docker cgroupfs (Debian, no systemd)",
			file: `10:net_prio:/` + id1 + `
9:perf_event:/docker/` + id1 + `
8:blkio:/docker/` + id1 + `
7:net_cls:/docker/` + id1 + `
6:freezer:/docker/` + id1 + `
5:devices:/docker/` + id1 + `
4:memory:/docker/` + id1 + `
3:cpuacct:/docker/` + id1 + `
2:cpu:/docker/` + id1 + `
`,
			path:    "/docker/" + id1,
			id:      id1,
			unified: "-",
		},
		{
			name: "v1 docker systemd (CentOS 7)",
			file: `11:pids:/system.slice/docker-` + id2 + `.scope
10:devices:/system.slice/docker-` + id2 + `.scope
9:blkio:/system.slice/docker-` + id2 + `.scope
8:memory:/system.slice/docker-` + id2 + `.scope
7:freezer:/system.slice/docker-` + id2 + `.scope
6:perf_event:/system.slice/docker-` + id2 + `.scope
5:hugetlb:/system.slice/docker-` + id2 + `.scope
4:net_prio,net_cls:/system.slice/docker-` + id2 + `.scope
3:cpuset:/system.slice/docker-` + id2 + `.scope
2:cpuacct,cpu:/system.slice/docker-` + id2 + `.scope
1:name=systemd:/system.slice/docker-` + id2 + `.scope
`,
			path:    "/system.slice/docker-" + id2 + ".scope",
			id:      id2,
			unified: "-",
		},
		{
			name: "hybrid kubernetes cgroupfs",
			file: `12:hugetlb:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
11:cpu,cpuacct:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
10:pids:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
9:memory:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
8:devices:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
1:name=systemd:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
0::/system.slice/containerd.service
`,
			path:    "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/" + id1,
			id:      id1,
			unified: "/system.slice/containerd.service",
		},
		{
			name: "hybrid host process: memory in a slice, pids at the root",
			file: `9:name=systemd:/
8:pids:/
7:blkio:/
4:memory:/process_api/f2c8dc1224d611c903e7ff632aa339b2
1:cpu:/
0::/
`,
			path:    "/process_api/f2c8dc1224d611c903e7ff632aa339b2",
			unified: "/",
		},
		{
			name: "hybrid: only the unified hierarchy names the container",
			file: `9:name=systemd:/
8:pids:/
4:memory:/process_api/f2c8dc1224d611c903e7ff632aa339b2
0::/system.slice/docker-` + id1 + `.scope
`,
			path:    "/system.slice/docker-" + id1 + ".scope",
			id:      id1,
			unified: "/system.slice/docker-" + id1 + ".scope",
		},
		{
			name: "v1 rootless podman: only name=systemd has the container",
			file: `12:pids:/user.slice/user-1000.slice/user@1000.service
11:memory:/user.slice/user-1000.slice/user@1000.service
5:cpuset:/
1:name=systemd:/user.slice/user-1000.slice/user@1000.service/user.slice/podman-4242.scope/` + id1 + `
`,
			path:    "/user.slice/user-1000.slice/user@1000.service/user.slice/podman-4242.scope/" + id1,
			id:      id1,
			unified: "-",
		},
		{
			name: "v1 pids preferred to memory",
			file: `3:memory:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id2 + `
2:pids:/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/` + id1 + `
`,
			path:    "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/" + id1,
			id:      id1,
			unified: "-",
		},
		{
			name: "v1 container only in a minor controller",
			file: `3:memory:/
2:pids:/
1:cpuset:/docker/` + id1 + `
`,
			path:    "/docker/" + id1,
			id:      id1,
			unified: "-",
		},
		{
			name: "v1 session process",
			file: `12:pids:/user.slice/user-1000.slice/session-2.scope
11:memory:/user.slice/user-1000.slice/session-2.scope
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
0::/user.slice/user-1000.slice/session-2.scope
`,
			path:    "/user.slice/user-1000.slice/session-2.scope",
			unified: "/user.slice/user-1000.slice/session-2.scope",
		},
		{
			name:    "crio conmon",
			file:    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-conmon-" + id1 + ".scope\n",
			path:    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-conmon-" + id1 + ".scope",
			unified: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-conmon-" + id1 + ".scope",
		},
		{
			name:    "no final newline, blank lines",
			file:    "\n0::/system.slice/docker-" + id1 + ".scope",
			path:    "/system.slice/docker-" + id1 + ".scope",
			id:      id1,
			unified: "/system.slice/docker-" + id1 + ".scope",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := ParseProcCgroup(strings.NewReader(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.Path(); got != tc.path {
				t.Errorf("Path() = %q; want %q", got, tc.path)
			}
			id, _ := IDFromCgroupPath(cs.Path())
			if id != tc.id {
				t.Errorf("id = %q; want %q", id, tc.id)
			}
			u, ok := cs.Unified()
			if tc.unified == "-" {
				if ok {
					t.Errorf("Unified() = %q, true; want no unified line", u)
				}
			} else if !ok || u != tc.unified {
				t.Errorf("Unified() = %q, %v; want %q", u, ok, tc.unified)
			}
		})
	}
}

func TestParseProcCgroupLines(t *testing.T) {
	cs, err := ParseProcCgroup(strings.NewReader("4:net_prio,net_cls:/a\n1:name=systemd:/b\n0::/c\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := ProcCgroups{
		{ID: 4, Controllers: []string{"net_prio", "net_cls"}, Path: "/a"},
		{ID: 1, Controllers: []string{"name=systemd"}, Path: "/b"},
		{ID: 0, Path: "/c"},
	}
	if !slices.EqualFunc(cs, want, func(a, b Hierarchy) bool {
		return a.ID == b.ID && slices.Equal(a.Controllers, b.Controllers) && a.Path == b.Path
	}) {
		t.Errorf("got %+v; want %+v", cs, want)
	}
	for ctrl, path := range map[string]string{"net_cls": "/a", "net_prio": "/a", "name=systemd": "/b"} {
		if p, ok := cs.Controller(ctrl); !ok || p != path {
			t.Errorf("Controller(%q) = %q, %v; want %q", ctrl, p, ok, path)
		}
	}
	if p, ok := cs.Controller("memory"); ok {
		t.Errorf("Controller(memory) = %q, true; want none", p)
	}
}

func TestParseProcCgroupErrors(t *testing.T) {
	for _, file := range []string{
		"",
		"\n\n",
		"garbage\n",
		"0:/no-controllers-field\n",
		"x::/\n",
		"-1::/\n",
		"0::relative\n",
		"0::/\nnonsense\n",
	} {
		if cs, err := ParseProcCgroup(strings.NewReader(file)); err == nil {
			t.Errorf("ParseProcCgroup(%q) = %+v; want an error", file, cs)
		}
	}
}

// TestProcCgroupSelf reads this process's own file: it must parse, whatever
// the host's layout.
func TestProcCgroupSelf(t *testing.T) {
	pid := uint32(os.Getpid())
	path, err := ProcCgroup(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, "/") {
		t.Errorf("ProcCgroup(self) = %q; want an absolute cgroup path", path)
	}
	if _, err := OfPID(pid); err != nil {
		t.Error(err)
	}
}

func TestOfPIDGone(t *testing.T) {
	// Above the kernel's PID_MAX_LIMIT (4194304): no process has it.
	if id, err := OfPID(1 << 23); err == nil || !os.IsNotExist(err) {
		t.Errorf("OfPID(no such pid) = %q, %v; want a does-not-exist error", id, err)
	}
}

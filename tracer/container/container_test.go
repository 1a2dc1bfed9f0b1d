package container

import (
	"strings"
	"testing"
)

// Ids of the shape runtimes make; each test case uses them where a real
// path has one.
const (
	id1 = "3f1b6e5fd2c1a4e0b6a8c2d9e7f01234a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0"
	id2 = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"
	id3 = "d4a9f9195eaf7e4a729f24151101e1de61f1398677e7b82acfb936dff0b4ce55"
)

func TestIDFromCgroupPath(t *testing.T) {
	for _, tc := range []struct {
		name, path, id string
	}{
		// Docker
		{"docker cgroupfs", "/docker/" + id1, id1},
		{"docker systemd", "/system.slice/docker-" + id1 + ".scope", id1},
		{"docker systemd, systemd in the container", "/system.slice/docker-" + id1 + ".scope/init.scope", id1},
		{"docker systemd, a service of the container's systemd", "/system.slice/docker-" + id1 + ".scope/system.slice/nginx.service", id1},
		{"docker rootless, systemd", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id1 + ".scope", id1},
		{"docker with a --cgroup-parent", "/my-parent/" + id1, id1},

		// containerd and nerdctl
		{"nerdctl cgroupfs", "/default/" + id1, id1},
		{"nerdctl systemd", "/system.slice/nerdctl-" + id1 + ".scope", id1},
		{"containerd cgroupfs given a systemd cgroupsPath",
			"/system.slice/containerd.service/kubepods-burstable-pod4ed02c0b_0df8_4d14_a30e_fd589ee4143a.slice:cri-containerd:" + id3, id3},
		{"containerd cgroupfs given a systemd cgroupsPath, besteffort",
			"/system.slice/containerd.service/kubepods-besteffort-podc83d0428_58af_41eb_8dba_b9e6eddffe7b.slice:cri-containerd:" + id1, id1},

		// CRI-O
		{"crio systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-" + id1 + ".scope", id1},
		{"crio systemd, crun's container leaf", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-" + id1 + ".scope/container", id1},
		{"crio cgroupfs", "/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/crio-" + id1, id1},

		// Podman
		{"podman root systemd", "/machine.slice/libpod-" + id1 + ".scope", id1},
		{"podman root systemd, container leaf", "/machine.slice/libpod-" + id1 + ".scope/container", id1},
		{"podman in a pod", "/machine.slice/machine-libpod_pod_" + id2 + ".slice/libpod-" + id1 + ".scope", id1},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope", id1},
		{"podman rootless, container leaf", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope/container", id1},
		{"podman rootless on cgroup v1 (name=systemd)", "/user.slice/user-1000.slice/user@1000.service/user.slice/podman-4242.scope/" + id1, id1},
		{"podman cgroupfs", "/libpod_parent/libpod-" + id1, id1},

		// Kubernetes
		{"k8s cgroupfs besteffort", "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/" + id1, id1},
		{"k8s cgroupfs burstable", "/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/" + id1, id1},
		{"k8s cgroupfs guaranteed", "/kubepods/poda38c12e8-255a-11e9-8cd9-0007cb0b2cc8/" + id1, id1},
		{"k8s cgroupfs, a child cgroup of the container", "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/" + id1 + "/kube-proxy", id1},
		{"k8s systemd containerd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope", id1},
		{"k8s systemd containerd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope", id1},
		{"k8s systemd containerd guaranteed", "/kubepods.slice/kubepods-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope", id1},
		{"k8s systemd docker", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/docker-" + id1 + ".scope", id1},
		{"k8s systemd crio", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podea19ff5d_943a_4466_a07e_a71e9e50cc62.slice/crio-" + id1 + ".scope", id1},

		// nesting: the innermost container
		{"docker in docker, cgroupfs", "/docker/" + id2 + "/docker/" + id1, id1},
		{"docker in docker, v2: the inner dockerd", "/system.slice/docker-" + id2 + ".scope/init", id2},
		{"docker in docker, v2: an inner container", "/system.slice/docker-" + id2 + ".scope/docker/" + id1, id1},
		{"kind node: a pod's container", "/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0d08203e_255a_11e9_8cd9_0007cb0b2cc8.slice/cri-containerd-" + id1 + ".scope", id1},
		{"kind node: its kubelet", "/system.slice/docker-" + id2 + ".scope/system.slice/kubelet.service", id2},
		{"kind node: a pod's cgroup", "/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0d08203e_255a_11e9_8cd9_0007cb0b2cc8.slice", id2},
		{"conmon inside a container is in that container", "/system.slice/docker-" + id2 + ".scope/machine.slice/libpod-conmon-" + id1 + ".scope", id2},
		{"three deep", "/kubepods/besteffort/pod1/" + id3 + "/docker/" + id2 + "/docker/" + id1, id1},

		// odd but harmless spellings
		{"trailing slash", "/docker/" + id1 + "/", id1},
		{"no leading slash", "docker/" + id1, id1},
		{"bare id", id1, id1},
		{"doubled slashes", "//system.slice//docker-" + id1 + ".scope", id1},
		{"outside the reader's cgroup namespace", "/../../system.slice/docker-" + id1 + ".scope", id1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, ok := IDFromCgroupPath(tc.path)
			if !ok || id != tc.id {
				t.Errorf("IDFromCgroupPath(%q) = %q, %v; want %q, true", tc.path, id, ok, tc.id)
			}
		})
	}
}

func TestIDFromCgroupPathNone(t *testing.T) {
	for _, tc := range []struct{ name, path string }{
		{"root", "/"},
		{"empty", ""},
		{"init", "/init.scope"},
		{"systemd service", "/system.slice/nginx.service"},
		{"dockerd itself", "/system.slice/docker.service"},
		{"containerd itself", "/system.slice/containerd.service"},
		{"kubelet", "/system.slice/kubelet.service"},
		{"templated service", "/system.slice/system-postgresql.slice/postgresql@14-main.service"},
		{"escaped slice", `/system.slice/system-serial\x2dgetty.slice/serial-getty@ttyS0.service`},
		{"login session", "/user.slice/user-1000.slice/session-2.scope"},
		{"user manager", "/user.slice/user-1000.slice/user@1000.service/init.scope"},
		{"user app scope", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-5d3c.scope"},
		{"systemd-run scope", "/system.slice/run-r3c1e0b5d9a4f4b7e8c2a6d1f0e9b8a7c.scope"},
		{"crio conmon systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-conmon-" + id1 + ".scope"},
		{"crio conmon cgroupfs", "/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/crio-conmon-" + id1},
		{"crio conmon in system.slice", "/system.slice/crio-conmon-" + id1 + ".scope"},
		{"podman conmon", "/machine.slice/libpod-conmon-" + id1 + ".scope"},
		{"podman rootless conmon", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-" + id1 + ".scope"},
		{"podman cgroupfs conmon", "/libpod_parent/conmon"},
		{"podman pod slice", "/machine.slice/machine-libpod_pod_" + id2 + ".slice"},
		{"podman pod conmon", "/machine.slice/machine-libpod_pod_" + id2 + ".slice/libpod-conmon-" + id1 + ".scope"},
		{"k8s root", "/kubepods.slice"},
		{"k8s qos", "/kubepods.slice/kubepods-besteffort.slice"},
		{"k8s pod systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice"},
		{"k8s pod cgroupfs", "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8"},
		{"containerd named container", "/default/my-container"},
		{"lxc", "/lxc/web"},
		{"lxc payload", "/lxc.payload.web"},
		{"short id", "/docker/" + id1[:12]},
		{"63 digits", "/docker/" + id1[:63]},
		{"65 digits", "/docker/" + id1 + "0"},
		{"uppercase", "/docker/" + strings.ToUpper(id1)},
		{"unknown runtime prefix", "/system.slice/foo-" + id1 + ".scope"},
		{"slice named like a container", "/system.slice/docker-" + id1 + ".slice"},
		{"id with a suffix", "/system.slice/docker-" + id1 + ".scope.bak"},
		{"colon form, unknown runtime", "/system.slice/containerd.service/kubepods.slice:foo:" + id1},
		{"colon form, no slice", "/system.slice/containerd.service/cri-containerd:" + id1},
		{"prefix alone", "/system.slice/docker-.scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if id, ok := IDFromCgroupPath(tc.path); ok || id != "" {
				t.Errorf("IDFromCgroupPath(%q) = %q, %v; want no container", tc.path, id, ok)
			}
		})
	}
}

func TestIDFromCgroupPathAllocs(t *testing.T) {
	p := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/cri-containerd-" + id1 + ".scope"
	if n := testing.AllocsPerRun(100, func() { IDFromCgroupPath(p) }); n != 0 {
		t.Errorf("IDFromCgroupPath allocates %v times; want 0", n)
	}
}

func FuzzIDFromCgroupPath(f *testing.F) {
	for _, s := range []string{
		"/", "", "/docker/" + id1, "/system.slice/docker-" + id1 + ".scope",
		"/system.slice/containerd.service/kubepods-burstable-pod4ed02c0b.slice:cri-containerd:" + id3,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/crio-conmon-" + id1 + ".scope",
		"::" + id1, ":" + id1, "-" + id1, "-" + id1 + ".scope", "docker-" + id1 + ".scope/",
		"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		id, ok := IDFromCgroupPath(path)
		if !ok {
			if id != "" {
				t.Fatalf("IDFromCgroupPath(%q) = %q, false", path, id)
			}
			return
		}
		if !isID(id) || !strings.Contains(path, id) {
			t.Fatalf("IDFromCgroupPath(%q) = %q: not a 64-hex id from the path", path, id)
		}
	})
}

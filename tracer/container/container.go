// Package container says which container a process runs in, from the cgroup
// the kernel keeps it in, so that the owners tcptrail reports can carry a
// container id: "held by nginx[4242] fd 7" is only half an answer on a host
// that runs forty nginx containers.
//
// The cgroup is the one place every container runtime leaves its mark that
// the host can read without talking to the runtime: each runtime puts a
// container's processes in a cgroup named after the container's id, and a
// process cannot leave it on its own. Namespaces do not name the container,
// and asking Docker, containerd or CRI-O over their sockets needs a client
// per runtime, credentials, and a round trip per process.
//
// The id returned is the runtime's full id, 64 lowercase hex digits: what
// `docker ps --no-trunc`, `crictl ps -o json`, `nerdctl ps --no-trunc` and
// `podman ps --no-trunc` print, and whose first 12 digits `docker ps` shows.
//
// Paths are those of /proc/PID/cgroup as read from the host's cgroup
// namespace. A tracer running inside a container with a private cgroup
// namespace sees its own container as "/" and cannot name it.
package container

import "strings"

// IDLen is the length of a container id: runc, crun and every runtime above
// them (Docker, containerd, CRI-O, Podman, nerdctl) use 32 random bytes in
// hex.
const IDLen = 64

// runtimes are the prefixes the runtimes give a container's cgroup when they
// name it "<prefix>-<id>" (with ".scope" under the systemd cgroup driver,
// without it under cgroupfs) or "<slice>:<prefix>:<id>" (the systemd driver's
// cgroupsPath syntax taken literally by a cgroupfs driver: containerd without
// SystemdCgroup=true under a kubelet that uses systemd, which leaves
// "/system.slice/containerd.service/kubepods-…slice:cri-containerd:<id>").
//
// The list is closed on purpose: the same runtimes name their monitor
// processes' cgroups "crio-conmon-<id>.scope" and "libpod-conmon-<id>.scope"
// after the container they watch, and conmon runs on the host, not in the
// container. A prefix not listed here is not trusted with a container id.
var runtimes = [...]string{
	"docker",         // dockerd (and cri-dockerd) with the systemd driver
	"cri-containerd", // containerd's CRI plugin, for Kubernetes
	"crio",           // CRI-O, systemd and cgroupfs drivers
	"libpod",         // Podman, root and rootless
	"nerdctl",        // nerdctl (containerd) with the systemd driver
}

// IDFromCgroupPath returns the id of the container whose cgroup path is path,
// or that path's innermost container when containers nest (a Kubernetes node
// in a kind container, Docker in Docker). ok is false for a path outside any
// container: systemd services and sessions ("/system.slice/nginx.service",
// "/user.slice/user-1000.slice/session-2.scope"), "/", "/init.scope", a
// Kubernetes pod's own cgroup, and conmon's.
//
// It recognises, in one component of the path, the layouts the runtimes
// create (id stands for 64 hex digits):
//
//	<id>                            Docker cgroupfs driver (/docker/<id>),
//	                                kubelet cgroupfs driver (/kubepods/besteffort/pod<uid>/<id>),
//	                                nerdctl cgroupfs (/default/<id>), rootless Podman on cgroup v1
//	                                (…/podman-<pid>.scope/<id>)
//	docker-<id>.scope               Docker systemd driver (/system.slice/…, /kubepods.slice/…)
//	cri-containerd-<id>.scope       containerd for Kubernetes, systemd driver
//	crio-<id>.scope, crio-<id>      CRI-O, systemd and cgroupfs drivers
//	libpod-<id>.scope, libpod-<id>  Podman (/machine.slice/…, rootless
//	                                /user.slice/user-1000.slice/user@1000.service/user.slice/…,
//	                                cgroupfs /libpod_parent/…)
//	nerdctl-<id>.scope              nerdctl, systemd driver
//	<slice>:cri-containerd:<id>     containerd whose cgroupfs driver was handed a systemd cgroupsPath
//
// Because a cgroup tree nests, a process in any cgroup below a container's
// (systemd's "init.scope" inside a container, crun's "container" leaf under
// libpod-<id>.scope, Docker in Docker's "/docker/<inner>") is in that
// container; the search goes from the last component to the first and the
// first match wins. The id is a substring of path: no allocation.
//
// Ids made of anything but 64 lowercase hex digits are not recognised: a
// shorter or named cgroup ("/lxc/web", containerd's "/default/my-ctr") is
// indistinguishable from any other cgroup someone chose to name.
func IDFromCgroupPath(path string) (id string, ok bool) {
	end := len(path)
	for end > 0 {
		start := strings.LastIndexByte(path[:end], '/') + 1
		if id, ok := idFromComponent(path[start:end]); ok {
			return id, true
		}
		end = start - 1
	}
	return "", false
}

// idFromComponent recognises one cgroup name of the layouts listed in
// IDFromCgroupPath.
func idFromComponent(c string) (string, bool) {
	if len(c) < IDLen {
		return "", false
	}
	if isID(c) {
		return c, true
	}
	// "<slice>:<runtime>:<id>"
	if i := strings.LastIndexByte(c, ':'); i >= 0 {
		id, head := c[i+1:], c[:i]
		prefix := head[strings.LastIndexByte(head, ':')+1:]
		if isID(id) && isRuntime(prefix) && strings.Contains(head, ":") {
			return id, true
		}
		return "", false
	}
	// "<runtime>-<id>" or "<runtime>-<id>.scope"
	c = strings.TrimSuffix(c, ".scope")
	n := len(c) - IDLen - 1
	if n <= 0 || c[n] != '-' {
		return "", false
	}
	if id := c[n+1:]; isID(id) && isRuntime(c[:n]) {
		return id, true
	}
	return "", false
}

func isRuntime(prefix string) bool {
	for _, r := range runtimes {
		if prefix == r {
			return true
		}
	}
	return false
}

// isID reports whether s is 64 lowercase hex digits. The runtimes write ids
// in lowercase; an uppercase "id" was not made by one.
func isID(s string) bool {
	if len(s) != IDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

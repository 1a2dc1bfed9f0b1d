// Package testprog finds the real programs the tests run beside tcptrail
// (services, their clients, Prometheus) and waits for them to listen.
package testprog

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/testwait"
)

// Require returns the path of program name, looked for in dirs, then in
// the usual system directories and PATH. Missing, it skips the test, or
// fails it under CI=true, where CI installs it. (The kernel matrix's guests
// have none of these programs: vm/ leaves the tests that need them out.)
func Require(t testing.TB, name string, dirs ...string) string {
	t.Helper()
	for _, dir := range append(dirs, "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin") {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (CI installs it)", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

// WaitListening waits until something accepts TCP connections on addr.
func WaitListening(t testing.TB, addr string) {
	t.Helper()
	testwait.Until(t, 60*time.Second, "a listener on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Nginx returns the command that runs nginx in the foreground from dir
// (its config, pid, logs and temp files all there), one worker serving
// "ok" on 127.0.0.1:port; httpExtra goes into the http block (e.g.
// "keepalive_timeout 1s;").
func Nginx(t testing.TB, bin, dir string, port int, httpExtra string) *exec.Cmd {
	t.Helper()
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	%[3]s
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server { listen 127.0.0.1:%[2]d; location / { return 200 "ok\n"; } }
}
`, dir, port, httpExtra)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return exec.Command(bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
}

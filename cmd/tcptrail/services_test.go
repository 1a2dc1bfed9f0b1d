package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testprog"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

// service starts a long-running program and stops it when the test ends.
func service(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
}

// idleClient starts a real client that connects and then waits on its
// stdin, which stays open and empty: it never reads its socket again, so
// when the server drops the idle connection, its end sits in CLOSE_WAIT.
func idleClient(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestWatchRealServices: 'tcptrail watch' and 'tcptrail why' on real
// servers that drop idle clients, and real clients that do not notice:
// psql against PostgreSQL (idle_session_timeout), redis-cli against Redis
// (timeout), and an HTTP keep-alive connection of this test's against
// nginx (keepalive_timeout). Each client's socket sits in CLOSE_WAIT: watch
// reports the leak with its owner, its metrics count it by program, and why
// names the socket, its state and its owner.
func TestWatchRealServices(t *testing.T) {
	privtest.Require(t)
	pgBin := testprog.Require(t, "postgres", "/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")
	initdb := filepath.Join(filepath.Dir(pgBin), "initdb")
	psql := testprog.Require(t, "psql")
	redis := testprog.Require(t, "redis-server", "/usr/bin")
	redisCLI := testprog.Require(t, "redis-cli", "/usr/bin")
	nginx := testprog.Require(t, "nginx", "/usr/sbin")
	const pgPort, redisPort, nginxPort = 17540, 17541, 17542

	// PostgreSQL refuses to run as root: its data belongs to "postgres".
	// Not under t.TempDir(), whose parent only root may enter.
	dir, err := os.MkdirTemp("", "tcptrail-services")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	pgDir := filepath.Join(dir, "pg")
	os.Mkdir(pgDir, 0o700)
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("PostgreSQL's user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	pgUser := syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	os.Chown(pgDir, int(pgUser.Uid), int(pgUser.Gid))
	asPostgres := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &pgUser}
		cmd.Dir = pgDir
		return cmd
	}
	if out, err := asPostgres(exec.Command(initdb, "-D", filepath.Join(pgDir, "data"), "--auth=trust", "-U", "postgres")).CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	service(t, asPostgres(exec.Command(pgBin, "-D", filepath.Join(pgDir, "data"), "-p", strconv.Itoa(pgPort), "-k", pgDir,
		"-c", "listen_addresses=127.0.0.1", "-c", "idle_session_timeout=1s")))
	service(t, exec.Command(redis, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--timeout", "1"))
	service(t, testprog.Nginx(t, nginx, dir, nginxPort, "keepalive_timeout 1s;"))
	for _, p := range []int{pgPort, redisPort, nginxPort} {
		testprog.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", p))
	}

	w := startWatch(t, true, "--port", fmt.Sprintf("%d,%d,%d", pgPort, redisPort, nginxPort), "--leak-after", "500ms")
	idleClient(t, psql, "-h", "127.0.0.1", "-p", strconv.Itoa(pgPort), "-U", "postgres")
	idleClient(t, redisCLI, "-h", "127.0.0.1", "-p", strconv.Itoa(redisPort))
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", nginxPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
	reply := make([]byte, 4096)
	if n, _ := c.Read(reply); !strings.Contains(string(reply[:n]), "200 OK") {
		t.Fatalf("nginx replied %q", reply[:n])
	}
	self := filepath.Base(os.Args[0])
	if len(self) > 15 {
		self = self[:15] // the kernel's comm
	}

	for _, cl := range []struct {
		comm string
		port int
	}{{"psql", pgPort}, {"redis-cli", redisPort}, {self, nginxPort}} {
		t.Run(cl.comm, func(t *testing.T) {
			var leak map[string]any
			testwait.Until(t, 30*time.Second, cl.comm+"'s leak on watch's stdout", func() bool {
				for _, r := range ofType(records(t, w.out.String()), "leak", phase("stuck")) {
					if r["rport"] == float64(cl.port) {
						leak = r
					}
				}
				return leak != nil
			})
			owners, _ := leak["owners"].([]any)
			if len(owners) != 1 || owners[0].(map[string]any)["comm"] != cl.comm {
				t.Fatalf("leak owners %v, want %s: %v", owners, cl.comm, leak)
			}
			m := w.scrape(t)
			if v := m[fmt.Sprintf(`tcptrail_close_wait_sockets{comm=%q,container=""}`, cl.comm)]; v != 1 {
				t.Errorf("close_wait_sockets for %s = %v, want 1", cl.comm, v)
			}

			// why, from the kernel's socket table alone.
			r := runBinary(t, exec.Command(binary, "why", fmt.Sprintf("127.0.0.1:%v", leak["lport"]), "--json"))
			if r.code != 0 {
				t.Fatalf("why: exit %d\n%s", r.code, r.stderr)
			}
			type holder struct {
				State  string
				Rport  int
				Owners []struct{ Comm string }
				Why    string
			}
			// The client's ephemeral port may also be the local port of
			// other connections to other peers (a TIME_WAIT socket of an
			// earlier connection, say: connect may reuse a port whose other
			// sockets have another remote). why rightly lists them all; the
			// one this client leaked is the one to the service's port.
			var holders []holder
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				var h holder
				if err := json.Unmarshal([]byte(line), &h); err != nil {
					t.Fatalf("why --json: %v\n%s", err, r.stdout)
				}
				if h.Rport == cl.port {
					holders = append(holders, h)
				}
			}
			if len(holders) != 1 || holders[0].State != "CLOSE_WAIT" || len(holders[0].Owners) != 1 || holders[0].Owners[0].Comm != cl.comm ||
				!strings.Contains(holders[0].Why, "never called close(fd") {
				t.Errorf("why: %+v, want one CLOSE_WAIT socket to port %d held by %s that never called close\n%s", holders, cl.port, cl.comm, r.stdout)
			}
		})
	}
}

// Command client is the story's client: it dials the server from a fixed
// local address, reads until the server hangs up, waits, and dials again.
// By default it forgets to close the connection, so the retry's bind fails
// with "address already in use"; with --close it closes and the retry works.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	server := flag.String("server", "127.0.0.1:7070", "address to dial")
	local := flag.String("local", "127.0.0.1:10001", "fixed local address to dial from")
	closeConn := flag.Bool("close", false, "close each connection after the server hangs up (the fix)")
	attempts := flag.Int("attempts", 2, "number of dials")
	wait := flag.Duration("wait", time.Second, "pause between dials")
	linger := flag.Duration("linger", 0, "stay alive this long after the last dial")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix(fmt.Sprintf("client[%d] ", os.Getpid()))

	laddr, err := net.ResolveTCPAddr("tcp", *local)
	if err != nil {
		log.Fatalf("local address: %v", err)
	}
	dialer := net.Dialer{LocalAddr: laddr, Timeout: 5 * time.Second}
	var leaked []net.Conn // keeps unclosed connections reachable, as a real leak would
	failed := false
	for i := 1; i <= *attempts; i++ {
		if i > 1 {
			time.Sleep(*wait)
		}
		conn, err := dialer.DialContext(context.Background(), "tcp", *server)
		if err != nil {
			log.Printf("dial %d: %v", i, err)
			failed = true
			continue
		}
		log.Printf("dial %d: connected %s -> %s", i, conn.LocalAddr(), conn.RemoteAddr())
		n, _ := io.Copy(io.Discard, conn)
		log.Printf("dial %d: server closed the connection after %d bytes", i, n)
		if *closeConn {
			conn.Close()
			log.Printf("dial %d: closed", i)
		} else {
			leaked = append(leaked, conn)
		}
	}
	time.Sleep(*linger)
	log.Printf("exiting with %d connection(s) never closed", len(leaked))
	if failed {
		os.Exit(1)
	}
}

// Command server is the story's server: it listens on 127.0.0.1:7070 and
// closes every connection the moment it accepts it.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:7070", "address to listen on")
	readyFile := flag.String("ready-file", "", "create this file once listening")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix(fmt.Sprintf("server[%d] ", os.Getpid()))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	log.Printf("listening on %s", ln.Addr())
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, nil, 0o644); err != nil {
			log.Fatalf("ready file: %v", err)
		}
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatalf("accept: %v", err)
		}
		log.Printf("accepted %s, closing it", conn.RemoteAddr())
		conn.Close()
	}
}

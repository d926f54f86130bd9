// rpcpeer: a Consul-shaped RPC peer for sidecrypt's integration tests.
//
//	rpcpeer server [flags]   accept and dispatch first bytes like a Consul server's :8300
//	rpcpeer client [flags]   dial like a Consul agent, run calls, print one RESULT line
//
// Built offline from Go's standard library and Debian's hashicorp packages
// (tests/peers/build.sh; docs/spec/rpc-peers.md §5). Output lines are "WORD key=value ...": the server
// prints LISTENING once and one EVENT per connection decision; the client prints
// "RESULT ok ..." (exit 0) or "RESULT fail ... error=..." (exit 1). Every wait is bounded.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rpcpeer server|client [flags] (-h for flags)")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		os.Exit(serverMain(os.Args[2:]))
	case "client":
		os.Exit(clientMain(os.Args[2:]))
	}
	fmt.Fprintln(os.Stderr, "rpcpeer: unknown mode", os.Args[1])
	os.Exit(2)
}

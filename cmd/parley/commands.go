package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// commandsHelp is printed after the settings by --help.
const commandsHelp = `
Commands (the first argument; the settings follow it):
  parley version           print the version, the VCS revision and the Go version
  parley check [flags]     check the configuration given by the flags on this host:
                           listeners, advertised address, a TURN allocation and an
                           SFU ICE/DTLS connection over loopback; exit 1 on failure
`

// subcommand runs the command named by args[0], if args start with one, and
// returns its exit code; ok is false when args are the server's own flags.
// A first argument that does not start with "-" is a command, so that
// `parley check --listen :9000` checks the configuration `parley --listen
// :9000` would run with.
func subcommand(args []string, getenv func(string) string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return 0, false
	}
	switch args[0] {
	case "version":
		if len(args) > 1 {
			fmt.Fprintln(stderr, "parley: version takes no arguments")
			return 2, true
		}
		runVersion(stdout)
		return 0, true
	case "check":
		return runCheck(args[1:], getenv, stdout, stderr), true
	}
	fmt.Fprintf(stderr, "parley: unknown command %q\n%s\nSettings are flags, like: parley --listen :8080 (see parley --help)\n", args[0], commandsHelp)
	return 2, true
}

// runSubcommand is main's entry to subcommand: it exits when args named a
// command and returns otherwise.
func runSubcommand(args []string) {
	if code, ok := subcommand(args, os.Getenv, os.Stdout, os.Stderr); ok {
		os.Exit(code)
	}
}

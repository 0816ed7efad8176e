package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/parley-chat/parley/metrics"
)

// buildInfo says which build this is: the module version ("(devel)" for a
// build from a work tree), the VCS revision when the build recorded it, and
// the Go version.
func buildInfo() metrics.BuildInfo {
	bi := metrics.BuildInfo{Version: "(unknown)", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	if info.Main.Version != "" {
		bi.Version = info.Main.Version
	}
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && bi.Revision != "" {
		bi.Revision += "+modified"
	}
	return bi
}

// runVersion prints the build: `parley version`.
func runVersion(w io.Writer) {
	bi := buildInfo()
	rev := bi.Revision
	if rev == "" {
		rev = "unknown revision (built without VCS information)"
	}
	fmt.Fprintf(w, "parley %s\nrevision %s\n%s %s/%s\n", bi.Version, rev, bi.GoVersion, runtime.GOOS, runtime.GOARCH)
}

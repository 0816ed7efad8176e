package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/parley-chat/parley/config"
)

const (
	exampleConfig = "../../deploy/parley.example.yaml"
	systemdUnit   = "../../deploy/parley.service"
)

func noEnv(string) string { return "" }

// helpSettings returns every setting as --help lists it: YAML key → flag
// and environment variable. --help is generated from config's one table of
// settings, so a setting added there shows up here.
func helpSettings(t *testing.T) map[string][2]string {
	t.Helper()
	var help bytes.Buffer
	if _, err := config.Load([]string{"--help"}, noEnv, &help); !errors.Is(err, config.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	re := regexp.MustCompile(`(?m)^  -([a-z-]+)(?: \S+)?\n\s+\S.*\(YAML ([a-z_.]+), env (PARLEY_[A-Z_]+)\)`)
	settings := map[string][2]string{}
	for _, m := range re.FindAllStringSubmatch(help.String(), -1) {
		settings[m[2]] = [2]string{"--" + m[1], m[3]}
	}
	if len(settings) < 30 {
		t.Fatalf("found only %d settings in --help:\n%s", len(settings), help.String())
	}
	return settings
}

// exampleKeys reads the example file: for each commented-out setting
// ("#key: value", indented under its section), its dotted key and the
// comment lines just above it.
func exampleKeys(t *testing.T, text string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	section, comment := "", ""
	setting := regexp.MustCompile(`^(  )?#([a-z_]+):`)
	header := regexp.MustCompile(`^([a-z_]+):\s*$`)
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch m := setting.FindStringSubmatch(line); {
		case m != nil:
			key := m[2]
			if m[1] != "" {
				key = section + "." + key
			} else {
				section = ""
			}
			if _, dup := keys[key]; dup {
				t.Errorf("line %d: %s appears twice", i+1, key)
			}
			keys[key] = comment
			comment = ""
		case header.MatchString(line):
			section = header.FindStringSubmatch(line)[1]
			comment = ""
		case strings.HasPrefix(trimmed, "# "), trimmed == "#":
			comment += trimmed + "\n"
		default:
			comment = ""
		}
	}
	return keys
}

// TestExampleConfig keeps deploy/parley.example.yaml honest: it has every
// setting, each with a comment naming its flag and environment variable; as
// shipped it loads to the defaults, and with every setting uncommented too
// (so the values shown are the defaults and all parse).
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	settings := helpSettings(t)
	keys := exampleKeys(t, text)
	for key, names := range settings {
		comment, ok := keys[key]
		if !ok {
			t.Errorf("setting %s (%s) is missing from %s", key, names[0], exampleConfig)
			continue
		}
		if !strings.Contains(comment, names[0]+",") || !strings.Contains(comment, names[1]) {
			t.Errorf("%s: the comment above it does not name %s and %s:\n%s", key, names[0], names[1], comment)
		}
	}
	for key := range keys {
		if _, ok := settings[key]; !ok {
			t.Errorf("%s in %s is not a setting", key, exampleConfig)
		}
	}

	uncommented := regexp.MustCompile(`(?m)^(\s*)#([a-z_]+:)`).ReplaceAllString(text, "$1$2")
	dir := t.TempDir()
	for name, body := range map[string]string{"as shipped": text, "uncommented": uncommented} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load([]string{"--config", path}, noEnv, os.Stderr)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if want := config.Default(); !reflect.DeepEqual(cfg, want) {
			t.Errorf("%s: loads to\n%+v\nwant the defaults\n%+v", name, cfg, want)
		}
	}
}

// TestSystemdUnit checks that the unit starts parley the way this program
// reads its settings, and keeps its sandbox.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{
		"ExecStart=/usr/local/bin/parley\n",
		"Environment=PARLEY_CONFIG=/etc/parley/parley.yaml",
		"Environment=PARLEY_DATA_DIR=/var/lib/parley",
		"StateDirectory=parley",
		"DynamicUser=yes",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"PrivateDevices=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"SystemCallFilter=@system-service",
		"LimitNOFILE=65536",
		"Restart=on-failure",
		"ExecReload=/bin/kill -HUP $MAINPID",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q", systemdUnit, want)
		}
	}
	// The environment names must be the ones config reads.
	for _, env := range regexp.MustCompile(`Environment=(PARLEY_[A-Z_]+)=`).FindAllStringSubmatch(unit, -1) {
		if env[1] != "PARLEY_CONFIG" && env[1] != config.EnvName("data-dir") {
			t.Errorf("%s sets %s, which parley does not read", systemdUnit, env[1])
		}
	}
}

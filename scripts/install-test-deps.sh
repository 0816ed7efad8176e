#!/bin/sh
# Installs what the test suite needs on a fresh Debian machine: Chromium and
# Firefox ESR for the browser tests, coturn's client tools for TURN interop and
# the benchmark's reference server, iproute2 and iptables for the NAT lab.
# Needs root.
set -eu

need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v firefox-esr >/dev/null 2>&1 || need="$need firefox-esr"
command -v turnutils_uclient >/dev/null 2>&1 || need="$need coturn"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v iptables >/dev/null 2>&1 || need="$need iptables"
command -v node >/dev/null 2>&1 || need="$need nodejs"

if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-test-deps: need root to install:$need" >&2
		exit 1
	fi
	echo "install-test-deps: installing$need"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
# The coturn package starts a system turnserver on :3478; tests bring their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop coturn >/dev/null 2>&1 || true; fi
pkill -x turnserver 2>/dev/null || true
exit 0

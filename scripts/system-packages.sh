#!/bin/sh
# The system packages that `make test` needs, installed by the project itself (issue 21).
#
# The tests run real peers and shells: an OpenSSH server (sshd, ssh-keygen) for the ssh transport, the
# adb server for the adb transport, and the on-device driver under dash, mksh (Android's shell) and
# busybox. This script checks each tool and, only when something is missing:
#   - as root with apt-get: `apt-get update` once, then installs just the missing packages;
#   - otherwise: prints one line naming the packages and how to install them, and exits 1.
# CHAMLAB_NO_APT=1 never installs (it reports as a non-root user would). sshd also needs /run/sshd,
# which root creates here. Usage: scripts/system-packages.sh [--check]  (--check never installs).
set -eu

check_only=${CHAMLAB_NO_APT:-0}
[ "${1:-}" = "--check" ] && check_only=1

# tool (a command name or an absolute path) : Debian package
pairs="dash:dash mksh:mksh busybox:busybox /usr/sbin/sshd:openssh-server ssh-keygen:openssh-client adb:adb"

missing=""
for pair in $pairs; do
  tool=${pair%%:*}
  pkg=${pair#*:}
  case $tool in
    /*) [ -x "$tool" ] && continue ;;
    *) command -v "$tool" >/dev/null 2>&1 && continue ;;
  esac
  case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
done
missing=${missing# }

uid=$(id -u)
if [ -n "$missing" ]; then
  if [ "$check_only" != 1 ] && [ "$uid" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages the tests need: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "error: the tests need system packages that are missing: $missing;" \
      "install them as root (apt-get install -y $missing) or run 'make test' as root" >&2
    exit 1
  fi
fi

# sshd refuses to start without its privilege-separation directory.
if [ ! -d /run/sshd ]; then
  if [ "$check_only" != 1 ] && [ "$uid" = 0 ]; then
    mkdir -p /run/sshd
  else
    echo "error: sshd needs the directory /run/sshd; create it as root (mkdir -p /run/sshd)" >&2
    exit 1
  fi
fi

#!/usr/bin/env bash
# Makes the Debian base images the Dockerfile starts FROM, without a
# container registry: debootstrap builds a minimal Debian 13 (trixie) root
# filesystem from Debian's package archive, and the container engine imports
# it under the names Docker Hub gives its official images:
#
#   docker.io/library/debian:trixie        debootstrap --variant=minbase
#   docker.io/library/debian:trixie-slim   the same, without docs, man pages
#                                          and translations (as Docker's slim)
#
# so that `FROM debian:trixie` resolves locally and the very Dockerfile a
# student builds with Docker Hub builds here too. Idempotent: an image that
# already exists is kept (--force makes them again).
#
#   scripts/container-base.sh             # podman if it runs, else docker
#   CONTAINER_ENGINE=docker scripts/container-base.sh
#   scripts/container-base.sh --force
#
# Needs root (debootstrap), debootstrap itself, and podman or docker.
set -euo pipefail

SUITE=trixie
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FULL=docker.io/library/debian:$SUITE
SLIM=docker.io/library/debian:$SUITE-slim

force=false
[ "${1:-}" = --force ] && force=true

say() { printf 'container-base: %s\n' "$*" >&2; }

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else say "neither podman nor docker is installed (apt-get install podman runc)"; exit 1
  fi
fi

quiet=; [ "$engine" = podman ] && quiet=--quiet
exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }

if ! $force && exists "$FULL" && exists "$SLIM"; then
  say "$FULL and $SLIM already exist ($engine): nothing to do"
  exit 0
fi

command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
[ "$(id -u)" = 0 ] || { say "debootstrap needs root: run this with sudo"; exit 1; }

work=$(mktemp -d /var/tmp/container-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

say "debootstrap --variant=minbase $SUITE from $MIRROR (about 30 s)"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  say "debootstrap failed: its last lines are above"
  exit 1
}

# What Docker's official image has besides the packages: the updates suite
# in apt's sources, and a clean apt (no package cache kept in layers).
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

import() { # rootfs name
  tar --numeric-owner -C "$1" -c . |
    "$engine" import ${quiet:-} --change 'CMD ["bash"]' - "$2" >/dev/null
  say "imported $2 ($("$engine" image inspect --format '{{.Size}}' "$2") bytes)"
}

# This machine's own certificate authorities (a proxy between it and the
# internet may sign what it forwards): the full image gets them, so that a
# build stage which installs ca-certificates trusts what this machine does
# (cargo fetching from crates.io, pip from PyPI). The slim image, for what
# runs, does not. With Docker Hub's image there are none: nothing changes.
ca_dir=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
cas=$(find "$ca_dir" -maxdepth 1 -name '*.crt' 2>/dev/null | sort || true)
if [ -n "$cas" ]; then
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  # shellcheck disable=SC2086 # one path per line, no spaces
  cp $cas "$rootfs/usr/local/share/ca-certificates/"
  say "added this machine's CAs to $FULL: $(echo $cas | xargs -n1 basename | tr '\n' ' ')"
fi
import "$rootfs" "$FULL"
rm -rf "$rootfs/usr/local/share/ca-certificates"

# The slim variant, as Docker's is made: dpkg told never to install docs,
# man pages and translations, and those already installed removed.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
import "$rootfs" "$SLIM"

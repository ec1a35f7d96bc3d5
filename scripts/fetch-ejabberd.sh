#!/usr/bin/env bash
# Unpacks Debian's ejabberd, and the packages it needs that are not installed, into a private
# folder (EJABBERD_ROOT, default $HOME/.cache/pip-mqtt-nodex/ejabberd) for the ejabberd cluster
# suite (test/helpers/ejabberdCluster.ts), which runs ejabberd's Erlang applications from there
# with the installed Erlang.
#
# Why not `apt-get install ejabberd`: the package starts a system service whose default config
# listens on port 1883, where the machine's Mosquitto is. `dpkg -x` only unpacks the files: no
# maintainer scripts, no service, no user, nothing under /etc.
#
# Idempotent: a folder that is complete (its marker file names the same ejabberd version as the
# candidate, or apt cannot be asked) is left as it is. Needs apt-get and dpkg (Debian); downloads
# as the current user, so it runs as root or not.
set -euo pipefail

ROOT="${EJABBERD_ROOT:-$HOME/.cache/pip-mqtt-nodex/ejabberd}"
MARKER="$ROOT/.complete"

# The ejabberd version apt would download ('' when the package lists do not know ejabberd).
candidate() {
    apt-cache policy ejabberd 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

updated=false
# apt-get update, once, as root only (the lists are missing on a fresh machine, or too old when a
# package version they name is no longer there).
update_lists() {
    if [ "$updated" = true ] || [ "$(id -u)" -ne 0 ]; then
        return 1
    fi
    echo "running apt-get update..."
    apt-get update -qq
    updated=true
}

version="$(candidate)"
if [ -f "$MARKER" ] && { [ -z "$version" ] || [ "$(head -n 1 "$MARKER")" = "$version" ]; }; then
    echo "ejabberd $(head -n 1 "$MARKER") is unpacked in $ROOT"
    exit 0
fi
if [ -z "$version" ]; then
    update_lists || { echo "apt knows no ejabberd package: run 'apt-get update' as root first" >&2; exit 1; }
    version="$(candidate)"
    if [ -z "$version" ]; then
        echo "no ejabberd package in the configured Debian sources" >&2
        exit 1
    fi
fi

# The work folder is beside ROOT (same file system), so the final rename is one step.
mkdir -p "$(dirname "$ROOT")"
work="$(mktemp -d "$(dirname "$ROOT")/.fetch-ejabberd-XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree"

# Downloads into $work/debs what `apt-get install ejabberd` would install (a dry run: nothing is
# installed), and ejabberd itself in any case (when it is installed system-wide the dry run names
# nothing); fails when a package could not be downloaded.
download() {
    rm -rf "$work/debs"
    mkdir -p "$work/debs"
    mapfile -t packages < <(
        { echo ejabberd; apt-get install -s --no-install-recommends ejabberd 2>/dev/null | awk '/^Inst / { print $2 }'; } | sort -u
    )
    echo "Downloading ${#packages[@]} packages: ${packages[*]}"
    # As root, apt-get download warns that user _apt cannot write the folder: harmless.
    (cd "$work/debs" && apt-get download -qq "${packages[@]}" 2>&1 | grep -v 'unsandboxed as root' || true)
    debs=("$work"/debs/*.deb)
    [ -e "${debs[0]}" ] && [ "${#debs[@]}" -eq "${#packages[@]}" ]
}

if ! download; then
    update_lists || { echo "could not download: ${packages[*]}" >&2; exit 1; }
    version="$(candidate)"
    download || { echo "could not download: ${packages[*]}" >&2; exit 1; }
fi
for deb in "${debs[@]}"; do
    dpkg -x "$deb" "$work/tree"
done
if ! compgen -G "$work/tree/usr/lib/*/ejabberd-*/ebin/ejabberd.app" >/dev/null; then
    echo "the unpacked tree has no usr/lib/*/ejabberd-*/ebin/ejabberd.app" >&2
    exit 1
fi
{ echo "$version"; printf '%s\n' "${packages[@]}"; } >"$work/tree/.complete"

# Replace the folder by a rename, so a run that dies halfway leaves no half-unpacked tree behind.
rm -rf "$ROOT.old"
if [ -e "$ROOT" ]; then
    mv "$ROOT" "$ROOT.old"
fi
mv "$work/tree" "$ROOT"
rm -rf "$ROOT.old"
echo "ejabberd $version unpacked in $ROOT"

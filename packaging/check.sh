#!/usr/bin/env bash
# Checks the built .deb packages (target/debian/*.deb, or the directory given): their
# contents, control data and maintainer scripts; `systemd-analyze verify` on their
# units; and a real install with dpkg into a throwaway root, proving that the service
# user, the data directory and the configuration's permissions are made. Needs root
# (dpkg --root, chown) but no running systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${CARGO_TARGET_DIR:-target}/debian}
server=$(ls "$dir"/casefile_*.deb)
agent=$(ls "$dir"/casefile-agent_*.deb)
fail() { echo "packaging check: $*" >&2; exit 1; }

# Contents: path, mode.
has() { # deb path mode
  local line
  line=$(dpkg-deb -c "$1" | awk -v p="./$2" '$6 == p {print $1}')
  [ -n "$line" ] || fail "$(basename "$1") lacks $2"
  [ -z "${3:-}" ] || [ "$line" = "$3" ] || fail "$(basename "$1"): $2 is $line, not $3"
}
has "$server" usr/bin/casefile -rwxr-xr-x
has "$server" usr/lib/systemd/system/casefile.service -rw-r--r--
has "$server" usr/lib/sysusers.d/casefile.conf
has "$server" usr/lib/tmpfiles.d/casefile.conf
has "$server" etc/casefile/casefile.toml -rw-r-----
has "$agent" usr/bin/casefile-agent -rwxr-xr-x
has "$agent" usr/lib/systemd/system/casefile-agent.service -rw-r--r--
has "$agent" usr/lib/tmpfiles.d/casefile-agent.conf
has "$agent" etc/default/casefile-agent -rw-------

# Control data: conffiles, maintainer scripts, fields.
control() { # deb file
  dpkg-deb -I "$1" "$2" 2>/dev/null || fail "$(basename "$1") has no $2"
}
[ "$(control "$server" conffiles)" = "/etc/casefile/casefile.toml" ] || fail "casefile's conffiles"
[ "$(control "$agent" conffiles)" = "/etc/default/casefile-agent" ] || fail "casefile-agent's conffiles"
for deb in "$server" "$agent"; do
  for script in postinst postrm prerm; do
    text=$(control "$deb" "$script")
    case "$text" in "#!/bin/sh"*) ;; *) fail "$(basename "$deb") $script is not a shell script" ;; esac
    ! grep -q '#DEBHELPER#' <<<"$text" || fail "$(basename "$deb") $script kept #DEBHELPER#"
  done
  control "$deb" control | grep -q '^Depends:.*systemd' || fail "$(basename "$deb") does not depend on systemd"
  control "$deb" control | grep -q '^Installed-Size: [0-9]' || fail "$(basename "$deb") has no Installed-Size"
done
control "$server" postinst | grep -q 'systemd-sysusers' || fail "casefile's postinst makes no user"

# A real install into a throwaway root; maintainer scripts run outside a chroot with
# DPKG_ROOT set (dpkg's --force-script-chrootless), as in image builds.
root=$(mktemp -d)
trap 'rm -rf "$root" "$root.log"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
grep '^root:' /etc/passwd >"$root/etc/passwd"
grep '^root:' /etc/group >"$root/etc/group"
# The root has no libc6 or systemd packages: their absence is forced past.
install() { dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@" >"$root.log" 2>&1 ||
  { cat "$root.log" >&2; fail "dpkg $*"; }; }
install -i "$server" "$agent"

user=$(awk -F: '$1 == "casefile" {print $3 ":" $4 ":" $6 ":" $7}' "$root/etc/passwd")
[ -n "$user" ] || fail "installing casefile made no casefile user"
uid=${user%%:*}
[ "$uid" -lt 1000 ] || fail "the casefile user is not a system user (uid $uid)"
case "$user" in *:/var/lib/casefile:/usr/sbin/nologin) ;; *) fail "the casefile user is $user" ;; esac
gid=$(awk -F: '$1 == "casefile" {print $3}' "$root/etc/group")
[ "$(stat -c '%u:%g %a' "$root/var/lib/casefile")" = "$uid:$gid 700" ] ||
  fail "/var/lib/casefile is $(stat -c '%u:%g %a' "$root/var/lib/casefile")"
[ "$(stat -c '%u:%g %a' "$root/etc/casefile/casefile.toml")" = "0:$gid 640" ] ||
  fail "/etc/casefile/casefile.toml is $(stat -c '%u:%g %a' "$root/etc/casefile/casefile.toml")"
[ "$(stat -c '%u:%g %a' "$root/var/lib/casefile-agent")" = "0:0 700" ] ||
  fail "/var/lib/casefile-agent is $(stat -c '%u:%g %a' "$root/var/lib/casefile-agent")"
"$root/usr/bin/casefile" --version >/dev/null
"$root/usr/bin/casefile-agent" --version >/dev/null

# The units, as installed (their ExecStart binaries exist under the root), beside the
# machine's own units (the targets they name).
cp -rn /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
for unit in casefile.service casefile-agent.service; do
  out=$(systemd-analyze verify --root="$root" "$root/usr/lib/systemd/system/$unit" 2>&1) || fail "$unit: $out"
  # verify exits 0 on some warnings: any line about our unit is one.
  ! grep -F "$unit" <<<"$out" || fail "$unit: $out"
done

# The agent must see the host as it is: no option of its unit may give it a mount
# namespace of its own (a private /tmp would hide dropped payloads from the collection).
for option in ProtectSystem PrivateTmp ReadWritePaths ReadOnlyPaths InaccessiblePaths TemporaryFileSystem \
  ProtectHome ProtectKernelTunables ProtectKernelModules ProtectKernelLogs ProtectControlGroups ProtectClock \
  PrivateDevices PrivateMounts ProtectProc ProcSubset BindPaths BindReadOnlyPaths RootDirectory; do
  ! grep -q "^$option=" "$root/usr/lib/systemd/system/casefile-agent.service" ||
    fail "casefile-agent.service sets $option: the collectors would not see the host's files"
done

# The server's sandboxing stays strict: systemd's exposure score (0 best, 10 worst)
# at most 2.0.
systemd-analyze security --offline=yes --threshold=20 --root="$root" \
  "$root/usr/lib/systemd/system/casefile.service" | tail -1

# Reinstalling (an upgrade) keeps the user and an edited configuration.
echo '# edited' >>"$root/etc/casefile/casefile.toml"
install --force-confold -i "$server"
grep -q '^# edited' "$root/etc/casefile/casefile.toml" || fail "an upgrade replaced the edited configuration"
[ "$(awk -F: '$1 == "casefile" {print $3}' "$root/etc/passwd")" = "$uid" ] || fail "an upgrade changed the user"

for deb in "$server" "$agent"; do
  echo "$(basename "$deb"): $(control "$deb" control | awk '/^Installed-Size:/ {print $2}') KiB installed, checks passed"
done

#!/usr/bin/env bash
# Checks soledad as npm would ship it: builds a clean copy of the sources, packs it,
# installs the tarball globally into a temporary prefix (production dependencies only),
# then checks that the installed `soledad` runs, starts a server and writes systemd units
# that pass `systemd-analyze verify`. Leaves nothing behind; exits non-zero on any failure.
#
# Usage: scripts/check-package.sh    (needs node_modules in the repository, from `npm ci`,
# and the npm registry or a warm npm cache for the production dependencies)
set -euo pipefail

started=$SECONDS
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/soledad-check-package.XXXXXX")
server_pid=

cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

step() { echo "check-package: [$((SECONDS - started))s] $*"; }

fail() {
  echo "check-package: FAILED: $*" >&2
  exit 1
}

# Runs a command with its output in a log; on failure shows the log's tail and fails.
logged() {
  local what=$1 log="$tmp/log.$RANDOM"
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "$what"
  fi
}

[ -d "$root/node_modules" ] || fail "$root/node_modules is missing: run npm ci first"

step "building a clean copy of the sources"
mkdir "$tmp/src"
tar -C "$root" --exclude=./node_modules --exclude=./dist --exclude=./.git --exclude=./.demo \
  -cf - . | tar -C "$tmp/src" -xf -
ln -s "$root/node_modules" "$tmp/src/node_modules"
# node_modules is a symlink to the repository's: keep its path, or declaration emit fails.
logged "npm run build" npm --prefix "$tmp/src" run build -- --preserveSymlinks

step "packing"
# The build above is the one that counts: a prepack script need not run again.
(cd "$tmp/src" && npm pack --ignore-scripts --json --pack-destination "$tmp") >"$tmp/pack.json" \
  || fail "npm pack"
tarball="$tmp/$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[0].filename)' "$tmp/pack.json")"
[ -f "$tarball" ] || fail "npm pack wrote no tarball"
contents=$(tar -tzf "$tarball")
for expected in package/package.json package/dist/cli/main.js \
  package/systemd/soledad-daemon.service package/systemd/soledad-server.service; do
  grep -qxF "$expected" <<<"$contents" || fail "$expected is missing from $(basename "$tarball")"
done
if grep -q '^package/dist/test/' <<<"$contents"; then
  fail "compiled tests are in the tarball"
fi
step "$(basename "$tarball"): $(wc -l <<<"$contents") files, $(du -k "$tarball" | cut -f1) KiB"

step "installing it globally into a temporary prefix"
prefix="$tmp/prefix"
logged "npm install -g" npm install -g --prefix "$prefix" --no-audit --no-fund "$tarball"
installed="$prefix/lib/node_modules/soledad"
soledad="$prefix/bin/soledad"
[ -x "$soledad" ] || fail "$soledad is not an executable"
for dev in $(node -p 'Object.keys(require(process.argv[1]).devDependencies ?? {}).join(" ")' \
  "$root/package.json"); do
  [ ! -e "$installed/node_modules/$dev" ] || fail "dev dependency $dev was installed"
done

# The installed CLI must not reach the repository's node_modules, whatever the caller's PATH.
cd "$tmp"
home="$tmp/home"
mkdir -p "$home"
run() { env -u NODE_PATH HOME="$home" "$soledad" "$@"; }

step "soledad --help"
run --help >"$tmp/help.txt" 2>&1 || {
  cat "$tmp/help.txt" >&2
  fail "soledad --help"
}
for command in server daemon init install-units config demo put get status; do
  grep -qE "^  $command( |$)" "$tmp/help.txt" \
    || fail "'$command' is missing from soledad --help (is it registered in cli/main.ts?)"
done

step "soledad config show-defaults and config check"
run config show-defaults --server >"$tmp/server.toml" || fail "config show-defaults --server"
logged "config check --server" run config check --server --config "$tmp/server.toml"
run config show-defaults --daemon >"$tmp/daemon.toml" || fail "config show-defaults --daemon"
logged "config check --daemon" run config check --daemon --config "$tmp/daemon.toml"

step "soledad server: starts, answers /health, stops on SIGTERM"
printf 'root = "root"\nlog_level = "warn"\n[public]\nport = 0\n[services]\nport = 0\n' \
  >"$tmp/server-port0.toml"
# Not through run(): $! must be the server itself, not a subshell.
env -u NODE_PATH HOME="$home" "$soledad" server --config "$tmp/server-port0.toml" \
  >"$tmp/server.log" 2>&1 &
server_pid=$!
deadline=$((SECONDS + 20))
until [ -s "$tmp/root/listening.json" ]; do
  kill -0 "$server_pid" 2>/dev/null || {
    cat "$tmp/server.log" >&2
    fail "the installed server exited at start"
  }
  [ "$SECONDS" -lt "$deadline" ] || fail "the installed server wrote no listening.json in 20 s"
  sleep 0.1
done
node -e '
  const info = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  fetch(`${info.public.url}/health`).then(async (response) => {
    const body = await response.json();
    if (response.status !== 200 || body.status !== "ok") throw new Error(JSON.stringify(body));
  }).catch((error) => { console.error(`GET /health: ${error.message}`); process.exit(1); });
' "$tmp/root/listening.json" || fail "GET /health on the installed server"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
[ "$status" -eq 0 ] || {
  cat "$tmp/server.log" >&2
  fail "the installed server exited $status on SIGTERM"
}

step "soledad install-units"
logged "install-units --user" run install-units --user --output "$tmp/units"
logged "install-units --system" run install-units --system --output "$tmp/units-system"
user_unit="$tmp/units/soledad-daemon.service"
system_unit="$tmp/units-system/soledad-server.service"
main_js=$(cd "$installed/dist/cli" && pwd -P)/main.js
for unit in "$user_unit" "$system_unit"; do
  exec_line=$(grep '^ExecStart=' "$unit") || fail "$unit has no ExecStart="
  step "  $exec_line"
  grep -qF "$main_js" <<<"$exec_line" || fail "$unit does not run the installed $main_js"
done
for scope in user system; do
  logged "install-units --$scope --bin /usr/bin/soledad" \
    run install-units "--$scope" --output "$tmp/shipped-$scope" --bin /usr/bin/soledad
done
cmp -s "$tmp/shipped-user/soledad-daemon.service" "$installed/systemd/soledad-daemon.service" \
  || fail "systemd/soledad-daemon.service differs from install-units --user --bin /usr/bin/soledad"
cmp -s "$tmp/shipped-system/soledad-server.service" "$installed/systemd/soledad-server.service" \
  || fail "systemd/soledad-server.service differs from install-units --system --bin /usr/bin/soledad"

step "systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    step "installing systemd for systemd-analyze"
    logged "apt-get install systemd" sh -c \
      'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd'
  else
    fail "systemd-analyze is missing (install systemd, or run as root with apt-get)"
  fi
fi
# A unit's problems are reported on lines naming it; anything else (the host's own units)
# is not ours to judge.
verify() {
  local unit=$1 output
  shift
  if ! output=$("$@" "$unit" 2>&1) || grep -F "$(basename "$unit")" <<<"$output" >&2; then
    echo "$output" >&2
    fail "systemd-analyze verify $unit"
  fi
}
verify "$system_unit" systemd-analyze verify
mkdir -m 0700 "$tmp/xdg"
verify "$user_unit" env XDG_RUNTIME_DIR="$tmp/xdg" systemd-analyze --user verify

step "OK in $((SECONDS - started)) s"

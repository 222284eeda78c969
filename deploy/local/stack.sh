#!/usr/bin/env bash
# Local kiln stack: installs what is missing, then runs Redis, MinIO and `kiln serve` (with its
# embedded NATS JetStream) on loopback, with all data under the git-ignored .data/ directory.
# Normally run through the Taskfile (`go tool task up|test|bench|install|build|proto|proto:check`).
#
#   stack.sh install       install missing system packages (apt) and MinIO (go install, pinned)
#   stack.sh build         go build -o .tools/bin/kiln ./cmd/kiln
#   stack.sh up            start the stack in the foreground (.data/up, ports 8700/4700/6700/9700);
#                          Ctrl-C or SIGTERM stops everything it started
#   stack.sh test          fresh stack (.data/test, ports 8710/4710/6710/9710, PostgreSQL on 5710
#                          for the store tests), then go vet,
#                          gofmt, proto:check, go mod tidy -diff, go test ./... and every
#                          fuzz target for a bounded time (FUZZ_TIME); stops the stack on exit
#   stack.sh bench         a stack like test's (.data/bench, test ports) whose kiln serve runs no
#                          workers and no rate limits, then the benchmark suite (BenchmarkSuite in
#                          ./bench/, which starts its own worker and ingest beside it, and nginx):
#                          one table on stderr, results in bench/results/<date>.json and .md
#   stack.sh faults        no shared stack: installs what is missing, builds kiln and nats-server,
#                          then the fault suite (go test ./internal/faults/ with KILN_FAULTS=1),
#                          which starts its own Redis, NATS and MinIO per scenario; data and logs
#                          in .data/faults/<scenario>, the result table in .data/faults/report.md
#   stack.sh proto         regenerate Go code from proto/**/*.proto
#   stack.sh proto-check   fail when the committed generated Go code is stale
#
# Environment overrides:
#   KILN_BIN            kiln binary to run; when set, it is used as is and not built
#                       (default: build .tools/bin/kiln from ./cmd/kiln)
#   MINIO_BIN           MinIO binary to run; when set, it is used as is and not installed
#                       (default: .tools/bin/minio, go-installed at the pinned version)
#   NATS_SERVER_BIN     nats-server binary the fault suite runs; when set, it is used as is
#                       (default: .tools/bin/nats-server, built from the module's dependency)
#   KILN_READY_TIMEOUT  seconds to wait for kiln's /readyz (default 90)
#   KILN_UP_FOLLOW_LOGS up only: 0 to not follow the kiln log on the terminal (default 1)
#   KILN_SKIP_APT       1 to never call apt-get (fail instead when a command is missing)
#   GO_TEST_FLAGS       test and faults: extra flags for go test (e.g. "-run TestFoo -v";
#                       faults: "-run TestFaults/worker_kill" runs one scenario); bench: for
#                       go test -bench (e.g. "-bench Suite/P6" runs one benchmark, and writes no results)
#   KILN_BENCH_QUICK    bench only: 1 for short clips and small counts (tries the harness in a few
#                       minutes; results in bench/results/<date>-quick.*)
#   FUZZ_TIME           test only: -fuzztime of each fuzz target, e.g. 30s, or 0 to skip
#                       fuzzing (default 10s, less when there are more than 10 targets, so
#                       that all of them fuzz for about 80 s in all)
#   KILN_STACK_HTTP_PORT, KILN_STACK_NATS_PORT, KILN_STACK_REDIS_PORT, KILN_STACK_S3_PORT,
#   KILN_STACK_CONSOLE_PORT, KILN_STACK_PG_PORT (faults: the fleet test's PostgreSQL, 5711)
#                       ports of the stack (defaults above), to run two stacks of one mode
#                       on one machine (from two clones)
#
# Nothing listens without credentials: every secret is generated once into the data dir (mode
# 0600) and wired: Redis runs with requirepass (its config file, not its command line), kiln's
# embedded NATS has one user per role with that role's permissions (README, "Security") and
# MinIO's notification target connects as the user notify, which may only publish bucket
# events. test and bench also create the users ingest, worker and catalog, and export every
# password to the tests (KILN_TEST_REDIS_PASSWORD, KILN_TEST_NATS_<USER>_PASSWORD).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

MODULE=github.com/kilnvideo/kiln
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
TOOLS_BIN="$ROOT/.tools/bin"
S3_ACCESS_KEY=kilnadmin
SOURCES_BUCKET=kiln-sources
OUTPUTS_BUCKET=kiln-outputs
READY_TIMEOUT="${KILN_READY_TIMEOUT:-90}"

# Services, in start order (each after what it depends on); stopped in the order kiln, minio,
# redis (see stop_all). MinIO's bucket notifications go to kiln's embedded NATS, yet MinIO
# starts first: with a queue dir its NATS target may be offline; it queues the events on disk
# and delivers them once kiln's NATS is up (checked with the pinned build).
SERVICES=(redis minio kiln)

# ---------------------------------------------------------------------------------------------
# output

if [[ -t 2 && -z "${NO_COLOR:-}" && "${CI:-}" != "true" ]]; then
	C_B=$'\e[1m' C_G=$'\e[32m' C_Y=$'\e[33m' C_R=$'\e[31m' C_0=$'\e[0m'
else
	C_B='' C_G='' C_Y='' C_R='' C_0=''
fi
log() { printf '%s==> %s%s\n' "$C_B" "$*" "$C_0" >&2; }
warn() { printf '%swarning: %s%s\n' "$C_Y" "$*" "$C_0" >&2; }
die() {
	printf '%serror: %s%s\n' "$C_R" "$*" "$C_0" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------------
# install

# command -> Debian package providing it
declare -A APT_PKG=(
	[ffmpeg]=ffmpeg [ffprobe]=ffmpeg
	[redis-server]=redis-server [redis-cli]=redis-tools
	[protoc]=protobuf-compiler
	[curl]=curl
	[/usr/bin/chromium]=chromium # browser tests (internal/e2e, internal/webui); a path, checked as is
	[/usr/sbin/nginx]=nginx-light # bench: P6 compares the catalog's playlists with nginx's static files
	['/usr/lib/postgresql/*/bin/initdb']=postgresql # store tests on PostgreSQL; a glob, checked as is
)

have_cmd() { # cmd, a path, or a path glob
	if [[ "$1" == *'*'* ]]; then compgen -G "$1" >/dev/null; else command -v "$1" >/dev/null; fi
}

apt_install() { # pkg...
	(($#)) || return 0
	[[ "${KILN_SKIP_APT:-0}" == 1 ]] && die "missing packages: $* (KILN_SKIP_APT=1, not installing)"
	command -v apt-get >/dev/null || die "missing packages: $*; no apt-get on this machine, install them yourself"
	local -a sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "missing packages: $*; not root and no sudo, install them yourself"
		sudo=(sudo)
		[[ -t 0 ]] || sudo+=(-n) # never wait for a password without a terminal
	fi
	log "installing with apt-get: $*"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# ensure_cmds cmd... installs the packages of the missing commands (one apt-get update at most).
ensure_cmds() {
	local -a pkgs=()
	local c p
	for c in "$@"; do
		if [[ "$c" == protoc-includes ]]; then
			# protoc needs the well-known types (google/protobuf/timestamp.proto).
			[[ -f /usr/include/google/protobuf/timestamp.proto ]] || pkgs+=(libprotobuf-dev)
			continue
		fi
		have_cmd "$c" && continue
		p="${APT_PKG[$c]}"
		[[ " ${pkgs[*]} " == *" $p "* ]] || pkgs+=("$p")
	done
	apt_install "${pkgs[@]}"
	for c in "$@"; do
		[[ "$c" == protoc-includes ]] || have_cmd "$c" || die "$c still missing after install"
	done
}

install_minio() {
	if [[ -n "${MINIO_BIN:-}" ]]; then
		[[ -x "$MINIO_BIN" ]] || die "MINIO_BIN=$MINIO_BIN is not an executable"
		return
	fi
	MINIO_BIN="$TOOLS_BIN/minio"
	minio_ok() {
		[[ -x "$MINIO_BIN" ]] &&
			go version -m "$MINIO_BIN" 2>/dev/null | awk '$1=="mod"{print $3}' | grep -qx "$MINIO_VERSION"
	}
	minio_ok && return
	mkdir -p "$TOOLS_BIN"
	# Serialize with concurrent runs; the first one builds, the others find it done.
	exec {lock}>"$ROOT/.tools/minio.lock"
	flock "$lock"
	if ! minio_ok; then
		log "installing MinIO $MINIO_VERSION into .tools/bin (go install, a few minutes the first time)"
		GOBIN="$TOOLS_BIN" GOFLAGS= go install "$MINIO_MODULE@$MINIO_VERSION"
	fi
	flock -u "$lock"
	exec {lock}>&-
	minio_ok || die "MinIO install failed"
}

# install_nats_server: the nats-server of the fault suite (internal/faults), built from the
# version go.mod pins (module cache, no network once downloaded); NATS_SERVER_BIN overrides.
install_nats_server() {
	if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
		[[ -x "$NATS_SERVER_BIN" ]] || die "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable"
		return
	fi
	NATS_SERVER_BIN="$TOOLS_BIN/nats-server"
	local want have
	want="$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)"
	have="$(go version -m "$NATS_SERVER_BIN" 2>/dev/null | awk '$1=="mod"{print $3}')" || true
	[[ -x "$NATS_SERVER_BIN" && "$have" == "$want" ]] && return
	mkdir -p "$TOOLS_BIN"
	log "building nats-server $want into .tools/bin"
	go build -o "$NATS_SERVER_BIN" github.com/nats-io/nats-server/v2
}

cmd_install() {
	local -a cmds=(ffmpeg ffprobe redis-server redis-cli protoc protoc-includes curl)
	# Only the test stack needs a browser (MODE is set by configure; unset for `install`).
	# and a PostgreSQL (the catalog store tests run on both backends).
	if [[ "${MODE:-}" == test ]]; then cmds+=(/usr/bin/chromium '/usr/lib/postgresql/*/bin/initdb'); fi
	if [[ "${MODE:-}" == bench ]]; then cmds+=(/usr/sbin/nginx); fi
	ensure_cmds "${cmds[@]}"
	install_minio
	install_nats_server
}

cmd_build() {
	if [[ -n "${KILN_BIN:-}" ]]; then
		[[ -x "$KILN_BIN" ]] || die "KILN_BIN=$KILN_BIN is not an executable"
		log "using KILN_BIN=$KILN_BIN (not building)"
		return
	fi
	KILN_BIN="$TOOLS_BIN/kiln"
	log "building .tools/bin/kiln"
	mkdir -p "$TOOLS_BIN"
	go build -o "$KILN_BIN" ./cmd/kiln
}

# ---------------------------------------------------------------------------------------------
# proto

protoc_gen() { # out_dir
	local -a files
	mapfile -t files < <(cd proto && find . -name '*.proto' -printf '%P\n' | sort)
	((${#files[@]})) || die "no .proto files under proto/"
	local plugin
	plugin="$(go tool -n protoc-gen-go)"
	(cd proto && protoc --plugin=protoc-gen-go="$plugin" --go_out="$1" --go_opt=module="$MODULE" -I . "${files[@]}")
}

cmd_proto() {
	ensure_cmds protoc protoc-includes
	protoc_gen "$ROOT"
	log "regenerated Go code for: $(cd proto && find . -name '*.proto' -printf '%P ' | sort)"
}

cmd_proto_check() {
	ensure_cmds protoc protoc-includes
	local tmp rc=0 f
	tmp="$(mktemp -d)"
	if ! protoc_gen "$tmp"; then
		rm -rf "$tmp"
		die "protoc failed"
	fi
	while IFS= read -r f; do
		if [[ ! -f "$ROOT/$f" ]]; then
			printf '%s: missing (not generated/committed)\n' "$f" >&2
			rc=1
		elif ! diff -u --label "$f (committed)" --label "$f (regenerated)" "$ROOT/$f" "$tmp/$f" >&2; then
			rc=1
		fi
	done < <(cd "$tmp" && find . -type f -printf '%P\n' | sort)
	rm -rf "$tmp"
	if ((rc)); then
		die "generated protobuf Go code is stale: run \`go tool task proto\` and commit the result"
	fi
	log "proto: generated Go code is up to date"
}

# ---------------------------------------------------------------------------------------------
# processes

# Config for one stack (mode up|test|bench).
configure() {
	MODE="$1"
	case "$MODE" in
	up) HTTP_PORT=8700 NATS_PORT=4700 REDIS_PORT=6700 S3_PORT=9700 CONSOLE_PORT=9701 ;;
	test | bench) HTTP_PORT=8710 NATS_PORT=4710 REDIS_PORT=6710 S3_PORT=9710 CONSOLE_PORT=9711 ;;
	*) die "unknown mode $MODE" ;;
	esac
	HTTP_PORT="${KILN_STACK_HTTP_PORT:-$HTTP_PORT}" NATS_PORT="${KILN_STACK_NATS_PORT:-$NATS_PORT}"
	REDIS_PORT="${KILN_STACK_REDIS_PORT:-$REDIS_PORT}" S3_PORT="${KILN_STACK_S3_PORT:-$S3_PORT}"
	CONSOLE_PORT="${KILN_STACK_CONSOLE_PORT:-$CONSOLE_PORT}"
	local p
	for p in "$HTTP_PORT" "$NATS_PORT" "$REDIS_PORT" "$S3_PORT" "$CONSOLE_PORT"; do
		[[ "$p" =~ ^[0-9]+$ ]] && ((p > 0 && p < 65536)) || die "bad port $p (KILN_STACK_*_PORT)"
	done
	DATA="$ROOT/.data/$MODE"
	RUN="$DATA/run"
	LOGS="$DATA/logs"
	API_URL="http://127.0.0.1:$HTTP_PORT"
	S3_ENDPOINT="127.0.0.1:$S3_PORT"
	CONSOLE_URL="http://127.0.0.1:$CONSOLE_PORT"
	NATS_URL="nats://127.0.0.1:$NATS_PORT"
	REDIS_ADDR="127.0.0.1:$REDIS_PORT"
	ALL_PORTS=("$HTTP_PORT" "$NATS_PORT" "$REDIS_PORT" "$S3_PORT" "$CONSOLE_PORT")
	configure_postgres
}

alive() { # pid: running and not a zombie
	local st
	[[ -r "/proc/$1/stat" ]] || return 1
	st="$(<"/proc/$1/stat")"
	st="${st##*) }"
	[[ "${st%% *}" != Z ]]
}

pgid_of() { # pid
	local st
	st="$(<"/proc/$1/stat")" || return 1
	st="${st##*) }"
	read -r _ _ pg _ <<<"$st"
	echo "$pg"
}

proc_text() { # pid: cmdline + environ, NULs as spaces
	{ tr '\0' ' ' <"/proc/$1/cmdline"; echo; tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null || true
}

# ours pid: the process was started for this stack (marker in its environment, set by start)
# or otherwise refers to this stack's data dir (cwd, command line).
ours() {
	local t cwd
	t="$(proc_text "$1")"
	cwd="$(readlink "/proc/$1/cwd" 2>/dev/null || true)"
	[[ "$t" == *"KILN_STACK_DATA=$DATA"$'\n'* || "$cwd/" == "$DATA/"* || "$t" == *"$DATA/"* ]]
}

port_open() { # port: something accepts TCP on 127.0.0.1:port
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port_pids() { # port: pids holding a listening socket on the port (any address)
	local hex inodes p fd l
	hex="$(printf ':%04X' "$1")"
	mapfile -t inodes < <(awk -v p="$hex" 'FNR>1 && $4=="0A" && substr($2, length($2)-4)==p {print $10}' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
	((${#inodes[@]})) || return 0
	for p in /proc/[0-9]*; do
		for fd in "$p"/fd/*; do
			l="$(readlink "$fd" 2>/dev/null)" || continue
			[[ "$l" == socket:* ]] || continue
			for i in "${inodes[@]}"; do
				if [[ "$l" == "socket:[$i]" ]]; then
					echo "${p#/proc/}"
					continue 3
				fi
			done
		done
	done
}

# terminate pid [seconds]: SIGTERM its process group (or the process when it is not a group
# leader), wait, then SIGKILL.
terminate() {
	local pid="$1" secs="${2:-20}" target i
	alive "$pid" || return 0
	target="$pid"
	[[ "$(pgid_of "$pid" 2>/dev/null)" == "$pid" ]] && target="-$pid"
	kill -TERM -- "$target" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		warn "pid $pid did not stop within ${secs}s, killing it"
		kill -KILL -- "$target" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
	fi
	# Reap it when it is our child; harmless otherwise.
	wait "$pid" 2>/dev/null || true
	# Stray members of the group (children of the service).
	[[ "$target" == -* ]] && kill -KILL -- "$target" 2>/dev/null || true
	return 0
}

# Refuse to run next to a live stack on the same data dir; stop what a dead one left behind.
clean_stale() {
	local f pid name port
	mkdir -p "$RUN"
	if [[ -f "$RUN/stack.pid" ]]; then
		pid="$(<"$RUN/stack.pid")"
		if [[ "$pid" =~ ^[0-9]+$ && "$pid" != $$ ]] && alive "$pid" &&
			[[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$ROOT" ]] &&
			tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'stack\.sh'; then
			die "a kiln $MODE stack is already running (pid $pid, started by $(tr '\0' ' ' <"/proc/$pid/cmdline")); stop it first (Ctrl-C in its terminal, or kill $pid)"
		fi
	fi
	echo $$ >"$RUN/stack.pid"
	for name in "${SERVICES[@]}"; do
		f="$RUN/$name.pid"
		[[ -f "$f" ]] || continue
		pid="$(<"$f")"
		if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && ours "$pid"; then
			warn "stopping $name (pid $pid) left over from a previous run"
			terminate "$pid" 20
		fi
		rm -f "$f"
	done
	for port in "${ALL_PORTS[@]}"; do
		for pid in $(port_pids "$port"); do
			if ours "$pid"; then
				warn "stopping pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) left over on port $port"
				terminate "$pid" 20
			fi
		done
		if port_open "$port"; then
			local who=""
			for pid in $(port_pids "$port"); do
				who+=" pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100);"
			done
			die "port 127.0.0.1:$port is in use by another program (${who:- unknown owner}); the kiln $MODE stack needs ports ${ALL_PORTS[*]}"
		fi
	done
}

declare -A PID=()
CLEANED=0

# start name logfile cmd...: runs the command in its own session/process group (so terminal
# signals reach only this script, which stops services in order), stdin from /dev/null.
start() {
	local name="$1" logf="$2"
	shift 2
	[[ -f "$logf" ]] && mv -f "$logf" "$logf.1"
	setsid env KILN_STACK_DATA="$DATA" "$@" </dev/null >"$logf" 2>&1 &
	PID[$name]=$!
	echo "${PID[$name]}" >"$RUN/$name.pid"
}

show_log() { # name [lines]
	local f="$LOGS/$1.log"
	[[ -f "$f" ]] || return 0
	printf '%s----- last %s lines of %s -----%s\n' "$C_Y" "${2:-40}" "${f#"$ROOT"/}" "$C_0" >&2
	tail -n "${2:-40}" "$f" >&2
	printf '%s-----%s\n' "$C_Y" "$C_0" >&2
}

# wait_for name seconds description cmd...: poll cmd until it succeeds; fail early when the
# service died.
wait_for() {
	local name="$1" secs="$2" what="$3" i
	shift 3
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		if ! alive "${PID[$name]}"; then
			show_log "$name" 60
			die "$name exited while waiting for $what (log: ${LOGS#"$ROOT"/}/$name.log)"
		fi
		sleep 0.2
	done
	show_log "$name" 60
	[[ "$name" != kiln ]] && show_log kiln 40
	die "timed out after ${secs}s waiting for $what"
}

# redis-cli reads the password from REDISCLI_AUTH (not its command line).
redis_pong() { [[ "$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

secret() { # file prefix: read the persisted secret or generate it
	if [[ ! -s "$1" ]]; then
		(umask 077 && printf '%s%s\n' "$2" "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$1")
	fi
	tr -d ' \n' <"$1"
}

stop_all() {
	((CLEANED)) && return 0
	CLEANED=1
	trap '' INT TERM HUP # finish stopping even when Ctrl-C is pressed again
	local p
	for p in "${TAIL_PID:-}" "${SLEEP_PID:-}"; do
		[[ -n "$p" ]] || continue
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	local name
	for name in kiln minio redis postgres; do
		[[ -n "${PID[$name]:-}" ]] || continue
		if alive "${PID[$name]}"; then
			log "stopping $name (pid ${PID[$name]})"
			terminate "${PID[$name]}" 30
		else
			wait "${PID[$name]}" 2>/dev/null || true
		fi
		rm -f "$RUN/$name.pid"
	done
	if [[ -f "$RUN/stack.pid" && "$(<"$RUN/stack.pid")" == "$$" ]]; then rm -f "$RUN/stack.pid"; fi
}

on_exit() {
	local rc=$?
	stop_all
	exit "$rc"
}

on_signal() {
	echo >&2
	log "received SIG$1, stopping"
	stop_all
	# Stopping is the normal way to end `up`; for test/bench an interruption is a failure.
	[[ "$MODE" == up ]] && exit 0
	case "$1" in INT) exit 130 ;; TERM) exit 143 ;; *) exit 129 ;; esac
}

# PostgreSQL of the test stack (mode test only): the catalog store tests run on it as well as
# on SQLite (KILN_TEST_DATABASE_URL; internal/testenv.Postgres makes a database per test). Its
# own port and data folder, a generated password, listening on 127.0.0.1 only, stopped on exit.
# initdb and postgres refuse to run as root: as root they run as the user postgres (from the
# Debian package), or kiln-pg, created when neither exists.
configure_postgres() {
	PG_PORT="" PG_URL=""
	[[ "$MODE" == test ]] || return 0
	PG_PORT=5710
	ALL_PORTS+=("$PG_PORT")
	SERVICES+=(postgres)
}

start_postgres() {
	[[ -n "$PG_PORT" ]] || return 0
	local bin user="" data="$DATA/postgres" pw
	bin="$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)"
	bin="${bin%/initdb}"
	PG_BIN="$bin"
	[[ -x "$bin/postgres" ]] || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
	local -a as=()
	if ((EUID == 0)); then
		if id -u postgres >/dev/null 2>&1; then
			user=postgres
		else
			id -u kiln-pg >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin kiln-pg || die "cannot create the user kiln-pg to run PostgreSQL as"
			user=kiln-pg
		fi
		as=(runuser -u "$user" --)
		mkdir -p "$data" && chown "$user" "$data" && chmod 700 "$data"
		if ! runuser -u "$user" -- test -w "$data"; then
			# A parent of the checkout is closed to other users (e.g. /root): use a folder in /tmp.
			data="$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-postgres.XXXXXX")"
			chown "$user" "$data"
			warn "$user cannot reach ${DATA#"$ROOT"/}/postgres; PostgreSQL data in $data"
		fi
	else
		mkdir -p "$data" && chmod 700 "$data"
	fi
	pw="$(secret "$DATA/postgres-password" '')"
	log "initdb (PostgreSQL $(basename "$(dirname "$bin")")) in ${data#"$ROOT"/}"
	local pwfile rc=0
	pwfile="$(mktemp "${TMPDIR:-/tmp}/kiln-test-postgres-pw.XXXXXX")" # mode 600
	printf '%s\n' "$pw" >"$pwfile"
	[[ -n "$user" ]] && chown "$user" "$pwfile"
	"${as[@]}" "$bin/initdb" -D "$data" -U kiln --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 \
		--locale=C.UTF-8 >"$LOGS/postgres-initdb.log" 2>&1 || rc=$?
	rm -f "$pwfile"
	((rc == 0)) || { show_log postgres-initdb 40; die "initdb failed (exit $rc)"; }
	log "starting postgres on 127.0.0.1:$PG_PORT"
	start postgres "$LOGS/postgres.log" "${as[@]}" "$bin/postgres" -D "$data" -p "$PG_PORT" \
		-c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off \
		-c synchronous_commit=off -c full_page_writes=off -c max_connections=300
	wait_for postgres 30 "postgres on 127.0.0.1:$PG_PORT" "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
	PG_URL="postgres://kiln:$pw@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
}

# start_stack mode: bootstrap and start everything, wait until kiln is ready.
start_stack() {
	configure "$1"
	cmd_install
	cmd_build
	trap on_exit EXIT
	trap 'on_signal INT' INT
	trap 'on_signal TERM' TERM
	trap 'on_signal HUP' HUP

	clean_stale
	if [[ "$MODE" != up ]]; then
		log "wiping ${DATA#"$ROOT"/}"
		find "$DATA" -mindepth 1 -maxdepth 1 ! -name run -exec rm -rf {} +
	fi
	mkdir -p "$DATA"/{redis,nats,minio,minio-events,work,logs,run}
	API_KEY="$(secret "$DATA/api-key" kiln_)"
	ADMIN_KEY="$(secret "$DATA/admin-key" kiln_)" # the tenant and key API (scope admin)
	S3_SECRET_KEY="$(secret "$DATA/s3-secret-key" '')"
	PLAYBACK_SIGNING_KEY="$(secret "$DATA/playback-signing-key" '')"
	REDIS_PASSWORD="$(secret "$DATA/redis-password" '')"
	# NATS users of kiln's embedded server other than kiln itself: notify (MinIO's bucket
	# events) always; test and bench also ingest, worker and catalog, for the tests that
	# publish or consume as one of kiln's roles, or attach processes of their own.
	declare -gA NATS_PASSWORD=()
	local -a nats_users=(notify) nats_env=()
	[[ "$MODE" != up ]] && nats_users+=(ingest worker catalog)
	local u
	for u in "${nats_users[@]}"; do
		NATS_PASSWORD[$u]="$(secret "$DATA/nats-$u-password" '')"
		nats_env+=("KILN_NATS_${u^^}_PASSWORD=${NATS_PASSWORD[$u]}")
	done

	log "starting redis on $REDIS_ADDR (password required)"
	(umask 077 && printf 'requirepass %s\n' "$REDIS_PASSWORD" >"$DATA/redis.conf")
	start redis "$LOGS/redis.log" redis-server "$DATA/redis.conf" --bind 127.0.0.1 --port "$REDIS_PORT" \
		--dir "$DATA/redis" --appendonly yes --save '' --daemonize no
	start_postgres
	wait_for redis 30 "redis on $REDIS_ADDR" redis_pong

	# Webhooks: the receivers of local runs and tests listen on 127.0.0.1; tests
	# retry fast. KILN_TEST_WEBHOOK_SECRET lets e2e tests verify per-upload webhooks.
	KILN_TEST_WEBHOOK_SECRET="$(secret "$DATA/webhook-secret" whsec_)"
	export KILN_TEST_WEBHOOK_SECRET
	local webhook_env=(KILN_WEBHOOK_SECRET="$KILN_TEST_WEBHOOK_SECRET")
	case "$MODE" in
	up) webhook_env+=(KILN_WEBHOOK_ALLOW_LOOPBACK=true) ;;
	test) webhook_env+=(KILN_WEBHOOK_ALLOW_LOOPBACK=true KILN_WEBHOOK_RETRY_SCHEDULE=200ms,500ms,1s,2s KILN_API_RATE_LIMIT=0
		KILN_CHUNK_THRESHOLD=30s KILN_CHUNK_LENGTH=12s) ;; # chunked: sources over 30 s (TestChunkedFramesAndSync)
	esac
	# bench: the suite runs the worker as a process of its own (its memory, its ffmpeg runs) and
	# loads the playback routes from one address.
	local -a mode_env=()
	[[ "$MODE" == bench ]] && mode_env+=(KILN_CONCURRENCY=0 KILN_API_RATE_LIMIT=0 KILN_PLAYBACK_RATE_LIMIT=0)

	log "starting minio on $S3_ENDPOINT (console $CONSOLE_URL)"
	start minio "$LOGS/minio.log" env \
		MINIO_ROOT_USER="$S3_ACCESS_KEY" \
		MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
		MINIO_BROWSER=on \
		MINIO_UPDATE=off \
		MINIO_NOTIFY_NATS_ENABLE_KILN=on \
		MINIO_NOTIFY_NATS_ADDRESS_KILN="127.0.0.1:$NATS_PORT" \
		MINIO_NOTIFY_NATS_SUBJECT_KILN=kiln.s3.events \
		MINIO_NOTIFY_NATS_USERNAME_KILN=notify \
		MINIO_NOTIFY_NATS_PASSWORD_KILN="${NATS_PASSWORD[notify]}" \
		MINIO_NOTIFY_NATS_JETSTREAM_KILN=on \
		MINIO_NOTIFY_NATS_QUEUE_DIR_KILN="$DATA/minio-events" \
		"$MINIO_BIN" server "$DATA/minio" --address "$S3_ENDPOINT" --console-address "127.0.0.1:$CONSOLE_PORT"
	wait_for minio 60 "minio on $S3_ENDPOINT" curl -sf "http://$S3_ENDPOINT/minio/health/live"

	KILN_START_ENV=(
		"${webhook_env[@]}"
		"${mode_env[@]}"
		"${nats_env[@]}"
		KILN_REDIS_PASSWORD="$REDIS_PASSWORD"
		KILN_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
		KILN_PUBLIC_URL="$API_URL"
		KILN_API_KEYS="$API_KEY,admin=$ADMIN_KEY:admin"
		KILN_PLAYBACK_SIGNING_KEY="$PLAYBACK_SIGNING_KEY"
		KILN_NATS_LISTEN="127.0.0.1:$NATS_PORT"
		KILN_NATS_STORE_DIR="$DATA/nats"
		KILN_REDIS_ADDR="$REDIS_ADDR"
		KILN_S3_ENDPOINT="$S3_ENDPOINT"
		KILN_S3_ACCESS_KEY="$S3_ACCESS_KEY"
		KILN_S3_SECRET_KEY="$S3_SECRET_KEY"
		KILN_S3_SECURE=false
		KILN_S3_NOTIFY_ARN=arn:minio:sqs::KILN:nats
		KILN_WORK_DIR="$DATA/work"
	)
	start_kiln "$DATA/kiln.db"
	log "${C_G}kiln $MODE stack is ready${C_0}"
}

# start_kiln database: start kiln serve with the stack's settings (KILN_START_ENV) and the
# catalog store database (a SQLite path or a postgres:// URL), and wait until it is ready.
start_kiln() {
	log "starting kiln ($KILN_BIN serve) on $API_URL, NATS on 127.0.0.1:$NATS_PORT, catalog on ${1%%://*}"
	start kiln "$LOGS/kiln.log" env "${KILN_START_ENV[@]}" KILN_DATABASE="$1" "$KILN_BIN" serve
	wait_for kiln 60 "kiln's NATS on 127.0.0.1:$NATS_PORT" port_open "$NATS_PORT"
	log "waiting for kiln to be ready ($API_URL/readyz, up to ${READY_TIMEOUT}s)"
	wait_for kiln "$READY_TIMEOUT" "$API_URL/readyz" curl -sf "$API_URL/readyz"
}

# on_postgres: the tests that run on the stack's catalog store again with PostgreSQL: kiln
# restarted on a fresh database of the stack's PostgreSQL for the end-to-end tests, and the
# catalog package's service and API tests on a database per test (they ran on SQLite first).
on_postgres() {
	local db="${PG_URL%/postgres?*}/kiln_e2e?sslmode=disable"
	PGPASSWORD="$(cat "$DATA/postgres-password")" "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U kiln -d postgres \
		-c 'CREATE DATABASE kiln_e2e' || return 1
	log "restarting kiln on PostgreSQL"
	kill -TERM "${PID[kiln]}" 2>/dev/null || true
	local i
	for ((i = 0; i < 150; i++)); do alive "${PID[kiln]}" || break; sleep 0.2; done
	start_kiln "$db"
	# shellcheck disable=SC2086
	KILN_TEST_CATALOG_BACKEND=postgres go test -count=1 -timeout 15m ${GO_TEST_FLAGS:-} ./catalog/ ./internal/e2e/
}

# Exit non-zero (after stopping the stack) when a service dies.
check_services() {
	local name
	for name in "${SERVICES[@]}"; do
		if ! alive "${PID[$name]}"; then
			show_log "$name" 60
			die "$name (pid ${PID[$name]}) exited unexpectedly"
		fi
	done
}

export_test_env() {
	export KILN_TEST_REQUIRE_SERVICES=1
	export KILN_TEST_API_URL="$API_URL"
	export KILN_TEST_API_KEY="$API_KEY"
	export KILN_TEST_ADMIN_KEY="$ADMIN_KEY"
	export KILN_TEST_S3_ENDPOINT="$S3_ENDPOINT"
	export KILN_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY"
	export KILN_TEST_S3_SECRET_KEY="$S3_SECRET_KEY"
	export KILN_TEST_REDIS_ADDR="$REDIS_ADDR"
	[[ -n "${PG_URL:-}" ]] && export KILN_TEST_DATABASE_URL="$PG_URL"
	export KILN_TEST_REDIS_PASSWORD="$REDIS_PASSWORD"
	export KILN_TEST_NATS_URL="$NATS_URL"
	local u
	for u in "${!NATS_PASSWORD[@]}"; do
		export "KILN_TEST_NATS_${u^^}_PASSWORD=${NATS_PASSWORD[$u]}"
	done
	export KILN_TEST_SOURCES_BUCKET="$SOURCES_BUCKET"
	export KILN_TEST_OUTPUTS_BUCKET="$OUTPUTS_BUCKET"
	export KILN_BIN # tests run the binary the stack runs (internal/testenv.BuildKiln)
	# The fault suite (internal/faults) starts its own services from these binaries.
	export MINIO_BIN
	export KILN_TEST_NATS_SERVER_BIN="$NATS_SERVER_BIN"
}

# run_step description cmd...: on failure show the kiln log tail and exit non-zero.
run_step() {
	local what="$1" rc=0
	shift
	log "$what: $*"
	"$@" || rc=$?
	if ((rc)); then
		show_log kiln 80
		die "$what failed (exit $rc)"
	fi
	check_services
}

cmd_up() {
	start_stack up
	local follow="${KILN_UP_FOLLOW_LOGS:-1}"
	cat >&2 <<EOF

${C_B}kiln is up${C_0}   (data: .data/up, logs: .data/up/logs)
API            $API_URL
web UI         $API_URL/ui/   (the console: library, uploads, player, webhooks, keys, operations)
API key        $API_KEY   (the default tenant's)
admin key      $ADMIN_KEY   (tenants and keys: .tools/bin/kiln tenants create NAME --api-key …)
MinIO console  $CONSOLE_URL   (user $S3_ACCESS_KEY, password $S3_SECRET_KEY; S3 API http://$S3_ENDPOINT)
upload         curl -H "Authorization: Bearer $API_KEY" -F file=@video.mp4 $API_URL/v1/uploads
               or: .tools/bin/kiln upload video.mp4 --wait --api-url $API_URL --api-key $API_KEY
playback       $API_URL/v1/play/<asset_id>/master.m3u8   (HLS; …/download.mp4 for the MP4;
               every URL is in GET $API_URL/v1/assets/<asset_id>)

Press Ctrl-C to stop.
EOF
	if [[ "$follow" == 1 ]]; then
		echo "----- following ${LOGS#"$ROOT"/}/kiln.log -----" >&2
		tail -n 0 -F "$LOGS/kiln.log" >&2 &
		TAIL_PID=$!
	fi
	local parent=$PPID done rc
	while :; do
		sleep 2 &
		SLEEP_PID=$!
		done='' rc=0
		wait -n -p done "$SLEEP_PID" "${PID[redis]}" "${PID[kiln]}" "${PID[minio]}" || rc=$?
		if [[ "$done" != "$SLEEP_PID" ]]; then
			check_services
			die "a service exited (pid $done, status $rc)"
		fi
		# Our parent (task) went away without signalling us: stop too.
		if ! alive "$parent" || [[ "$(awk '{print $4}' "/proc/$$/stat" 2>/dev/null)" != "$parent" ]]; then
			log "parent process exited, stopping"
			exit 0
		fi
	done
}

cmd_test() {
	start_stack test
	export_test_env
	run_step "go vet" go vet ./...
	run_step "gofmt" bash -c 'out="$(gofmt -l $(git ls-files "*.go" 2>/dev/null || find . -name "*.go" -not -path "./.tools/*"))"; [[ -z "$out" ]] || { printf "not gofmt-formatted:\n%s\n" "$out"; exit 1; }'
	run_step "proto:check" bash "${BASH_SOURCE[0]}" proto-check
	run_step "go mod tidy" bash -c 'if ! d="$(go mod tidy -diff)"; then printf "%s\ngo.mod/go.sum are not tidy: run go mod tidy and commit the result\n" "$d"; exit 1; fi'
	# shellcheck disable=SC2086
	run_step "go test" go test -count=1 -timeout 25m ${GO_TEST_FLAGS:-} ./...
	run_step "go test on PostgreSQL (catalog, e2e)" on_postgres
	run_step "fuzz" fuzz_all
	log "${C_G}all tests passed${C_0}"
}

# Fuzzing: the seed corpora already ran as tests under go test; fuzz_all then fuzzes every
# native fuzz target (func FuzzX(f *testing.F) in a *_test.go) one at a time, since go test
# -fuzz takes one target per run. A failing input is left where Go writes it,
# <package>/testdata/fuzz/<FuzzX>/<hash>: `go test -run 'FuzzX/<hash>' ./<package>/` replays it,
# and committing it keeps it as a seed.
FUZZ_BUDGET=80 # seconds of fuzzing in all when FUZZ_TIME is not set (each run also takes ~2 s to start)

fuzz_targets() { # prints "<package dir> <FuzzName>" lines
	local f name
	while IFS= read -r f; do
		while IFS= read -r name; do
			printf '%s %s\n' "./$(dirname "${f#./}")" "$name"
		done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F) {$/\1/p' "$f")
	done < <(grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=.tools --exclude-dir=.data \
		'^func Fuzz' . | sort)
}

fuzz_all() {
	local -a targets failed=()
	mapfile -t targets < <(fuzz_targets)
	if ((${#targets[@]} == 0)); then
		warn "no fuzz targets found"
		return 0
	fi
	local per="${FUZZ_TIME:-}"
	if [[ -z "$per" ]]; then
		local secs=$((FUZZ_BUDGET / ${#targets[@]}))
		per="$((secs > 10 ? 10 : secs < 2 ? 2 : secs))s"
	fi
	[[ "$per" =~ ^[0-9]+$ ]] && per+=s # plain seconds
	if [[ "$per" == 0s ]]; then
		warn "FUZZ_TIME=${FUZZ_TIME}: not fuzzing"
		return 0
	fi
	local logs="$LOGS/fuzz" t dir name out rc start
	mkdir -p "$logs"
	log "fuzzing ${#targets[@]} targets for $per each (output in ${logs#"$ROOT"/}/<target>.log)"
	for t in "${targets[@]}"; do
		dir="${t% *}" name="${t#* }" out="$logs/${t#* }.log" rc=0 start=$SECONDS
		go test -run '^$' -fuzz "^$name\$" -fuzztime "$per" "$dir" >"$out" 2>&1 || rc=$?
		# Go 1.26's fuzz coordinator may end a clean run with "context deadline exceeded" when
		# -fuzztime expires under CPU contention (go.dev/issue/75804, fixed in Go 1.27): not a
		# finding when no input failed (no "Failing input written", no failing seed).
		if ((rc)) && ! grep -q 'Failing input written to' "$out" && ! grep -q -- '--- FAIL: Fuzz[^ ]*/' "$out" &&
			grep -qx '[[:space:]]*context deadline exceeded' "$out"; then
			warn "$name ($dir): \"context deadline exceeded\" at the end of -fuzztime without a failing input (go.dev/issue/75804), not a finding"
			rc=0
		fi
		if ((rc)); then
			cat "$out" >&2
			printf '%sFAIL %s (%s)%s\n' "$C_R" "$name" "$dir" "$C_0" >&2
			if grep -q 'Failing input written to' "$out"; then
				printf '  the failing input is under %s/testdata/fuzz/%s/; replay it with: go test -run '"'"'%s/<file>'"'"' %s/\n' \
					"$dir" "$name" "$name" "$dir" >&2
			fi
			failed+=("$name")
		else
			printf 'ok   %-22s %-22s %3ds  %s\n' "$name" "$dir" $((SECONDS - start)) "$(grep -o 'execs: [0-9]*' "$out" | tail -n 1)" >&2
		fi
	done
	if ((${#failed[@]})); then
		printf '%s fuzz target(s) failed: %s\n' "${#failed[@]}" "${failed[*]}" >&2
		return 1
	fi
}

cmd_bench() {
	if [[ -z "$(find bench -name '*_test.go' -print -quit 2>/dev/null)" ]]; then
		warn "no *_test.go files under bench/, nothing to benchmark"
		return 0
	fi
	start_stack bench
	export_test_env
	# One run of the suite (each benchmark alternates its sides itself); the full suite takes
	# 15–30 min on 2 cores, the first run a few more to generate its clips (.data/bench-media).
	# shellcheck disable=SC2086
	run_step "benchmarks" go test -count=1 -run '^$' -bench Suite -benchtime 1x -timeout 2h ${GO_TEST_FLAGS:-} ./bench/
}

# cmd_faults: the whole fault suite, no shared stack (each scenario starts its own services).
cmd_faults() {
	MODE=faults
	ensure_cmds ffmpeg ffprobe redis-server curl '/usr/lib/postgresql/*/bin/initdb'
	install_minio
	install_nats_server
	cmd_build
	local dir="$ROOT/.data/faults"
	mkdir -p "$dir"
	rm -f "$dir/report.md"
	# The fleet test's catalogs share a PostgreSQL: one for the suite, on its own port.
	DATA="$dir/postgres-server" RUN="$dir/postgres-server/run" LOGS="$dir/postgres-server/logs"
	PG_PORT="${KILN_STACK_PG_PORT:-5711}"
	rm -rf "$DATA" && mkdir -p "$RUN" "$LOGS"
	trap on_exit EXIT
	trap 'on_signal INT' INT
	trap 'on_signal TERM' TERM
	start_postgres
	export KILN_TEST_DATABASE_URL="$PG_URL"
	local rc=0
	log "fault suite (scenario data and logs in ${dir#"$ROOT"/})"
	# shellcheck disable=SC2086
	KILN_FAULTS=1 KILN_BIN="$KILN_BIN" MINIO_BIN="$MINIO_BIN" KILN_TEST_NATS_SERVER_BIN="$NATS_SERVER_BIN" \
		KILN_FAULTS_DIR="$dir" KILN_FAULTS_REPORT="$dir/report.md" \
		go test -count=1 -timeout 30m -run . ./internal/faults/ -v ${GO_TEST_FLAGS:-} || rc=$?
	if [[ -f "$dir/report.md" ]]; then
		log "fault suite results"
		cat "$dir/report.md" >&2
	fi
	((rc == 0)) || die "fault suite failed (exit $rc); logs of every process in ${dir#"$ROOT"/}/<scenario>/logs"
	log "${C_G}fault suite passed${C_0}"
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

case "${1:-}" in
install) cmd_install ;;
build) cmd_build ;;
up) cmd_up ;;
test) cmd_test ;;
bench) cmd_bench ;;
faults) cmd_faults ;;
proto) cmd_proto ;;
proto-check | proto:check) cmd_proto_check ;;
*) usage ;;
esac

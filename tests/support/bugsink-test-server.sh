#!/usr/bin/env bash
# bugsink-test-server.sh — run a throw-away Bugsink (Sentry-protocol server) for tests.
#
#   bugsink-test-server.sh start <workdir> <port>  -> prints one line: the DSN; returns once HTTP answers
#   bugsink-test-server.sh count <workdir>         -> number of stored events (integer)
#   bugsink-test-server.sh dump  <workdir>         -> one JSON object per stored event (incl. parsed "data")
#   bugsink-test-server.sh stop  <workdir>         -> stops the server started in <workdir>, cleans runtime files
#
# Everything (config, sqlite DBs, pid file, logs, ingest spool) lives under <workdir>; the server binds only
# 127.0.0.1:<port>. Bugsink is installed from PyPI (`pip install 'bugsink>=2,<3'`) only if `bugsink-manage` is missing.
# Ingestion is synchronous (SNAPPEA TASK_ALWAYS_EAGER, as in Bugsink's `local` template): when the POST to
# /api/<id>/envelope/ has returned 200, the event is already in the DB, so `count` needs no waiting/snappea worker.
#
# Optional environment:
#   BUGSINK_PYTHON        python used for `pip install` when bugsink is missing (default: python3.11, else python3)
#   BUGSINK_START_TIMEOUT seconds to wait for HTTP readiness (default 60)
#   BUGSINK_TEMPLATE_DIR  opt-in cache of a freshly migrated DB (per bugsink version), shared between workdirs;
#                         turns the ~7 s of migrations into a ~0.3 s copy. Off by default (nothing outside <workdir>).
#   BUGSINK_PURGE=1       `stop` also deletes the DBs, config and logs it created in <workdir>.
set -euo pipefail

die() { echo "bugsink-test-server: $*" >&2; exit 1; }
usage() { die "usage: $0 start <workdir> <port> | count <workdir> | dump <workdir> | stop <workdir>"; }

cmd=${1:-}; wd_arg=${2:-}
[ -n "$cmd" ] && [ -n "$wd_arg" ] || usage

# Plain python for count/dump (only needs the stdlib sqlite3 module).
sys_python() {
    if [ -n "${BUGSINK_PYTHON:-}" ]; then echo "$BUGSINK_PYTHON"
    elif command -v python3.11 >/dev/null 2>&1; then echo python3.11
    else echo python3; fi
}

pid_alive() {  # pid belongs to a live process started by us for this workdir
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$WD/gunicorn.conf.py" || return 1
}

port_free() {  # true if nothing listens on 127.0.0.1:$1
    "$(sys_python)" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

http_ok() {  # $1 = url; 0 if it answers 2xx
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
    else
        "$(sys_python)" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
    fi
}

ensure_bugsink() {
    hash -r
    if command -v bugsink-manage >/dev/null 2>&1; then return 0; fi
    local py; py=$(sys_python)
    echo "bugsink-test-server: bugsink-manage not found, installing bugsink from PyPI" >&2
    "$py" -m pip install -q --disable-pip-version-check --root-user-action=ignore 'bugsink>=2,<3' >&2 \
        || die "pip install bugsink failed"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
    hash -r
    if ! command -v bugsink-manage >/dev/null 2>&1; then
        # scripts dir of that interpreter may not be on PATH (e.g. pip --user or odd layouts)
        local sd; sd=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        PATH="$sd:$HOME/.local/bin:$PATH"; export PATH; hash -r
        command -v bugsink-manage >/dev/null 2>&1 || die "bugsink installed but bugsink-manage not on PATH"
    fi
}

write_conf() {  # $1 = port
    local port=$1
    rm -f "$WD/bugsink_conf.py"
    (cd "$WD" && bugsink-create-conf --template=local --host 127.0.0.1 --port "$port" -o "$WD/bugsink_conf.py") \
        >>"$WD/setup.log" 2>&1 || die "bugsink-create-conf failed; see $WD/setup.log"
    cat >>"$WD/bugsink_conf.py" <<EOF

# ---- appended by bugsink-test-server.sh: keep all state in the workdir, no network, no async worker ----
DATABASES["default"]["NAME"] = "$WD/db.sqlite3"
DATABASES["default"]["TEST"]["NAME"] = "$WD/test.sqlite3"
DATABASES["snappea"]["NAME"] = "$WD/snappea.sqlite3"
SNAPPEA["TASK_ALWAYS_EAGER"] = True   # digest inside the ingest request (the local template's default too)
SNAPPEA["WAKEUP_CALLS_DIR"] = "$WD/snappea-wakeup"
BUGSINK.update({
    "BASE_URL": "http://127.0.0.1:$port",
    "INGEST_STORE_BASE_DIR": "$WD/ingestion",
    "PHONEHOME": False,               # default True would try to reach bugsink.com
    "MAX_EVENTS_PER_PROJECT_PER_5_MINUTES": 1_000_000,   # defaults (1000/5000) could 429 a chatty test
    "MAX_EVENTS_PER_PROJECT_PER_HOUR": 1_000_000,
    "MAX_EVENTS_PER_5_MINUTES": 1_000_000,
    "MAX_EVENTS_PER_HOUR": 1_000_000,
})
EOF
    cat >"$WD/gunicorn.conf.py" <<EOF
bind = ["127.0.0.1:$port"]
workers = 1
worker_tmp_dir = "$WD"
control_socket_disable = True     # gunicorn>=25 otherwise opens \$HOME/.gunicorn/gunicorn.ctl (shared!)
pidfile = "$WD/gunicorn.pid"
accesslog = "$WD/access.log"
errorlog = "$WD/server.log"
capture_output = True
graceful_timeout = 5
timeout = 60
EOF
}

# Runs inside `bugsink-manage shell -c` (Django set up with $WD/bugsink_conf.py).
SETUP_PY='
import os, sys, secrets, sqlite3
wd = os.environ["BS_WORKDIR"]
from bugsink.version import __version__
tmpl = os.environ.get("BUGSINK_TEMPLATE_DIR") or None
if tmpl:
    tmpl = os.path.join(tmpl, "bugsink-" + __version__)
fresh = not os.path.exists(os.path.join(wd, "db.sqlite3"))
if tmpl and fresh and os.path.exists(os.path.join(tmpl, "db.sqlite3")):
    import shutil
    for n in ("db.sqlite3", "snappea.sqlite3"):
        shutil.copyfile(os.path.join(tmpl, n), os.path.join(wd, n))
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
call_command("migrate", "snappea", database="snappea", interactive=False, verbosity=0)
if tmpl and not os.path.exists(os.path.join(tmpl, "db.sqlite3")):
    os.makedirs(tmpl, exist_ok=True)
    for n in ("snappea.sqlite3", "db.sqlite3"):   # db.sqlite3 last: its presence marks the cache complete
        src = sqlite3.connect(os.path.join(wd, n)); tmp = os.path.join(tmpl, n + ".%d.tmp" % os.getpid())
        dst = sqlite3.connect(tmp); src.backup(dst); dst.close(); src.close()
        os.replace(tmp, os.path.join(tmpl, n))
from users.models import User
from teams.models import Team, TeamMembership, TeamRole
from projects.models import Project, ProjectMembership, ProjectRole
user = User.objects.filter(username="admin").first()
if user is None:
    pw = secrets.token_urlsafe(12)
    user = User.objects.create_superuser(username="admin", email="admin@example.invalid", password=pw)
    with open(os.path.join(wd, "admin-password"), "w") as f:
        f.write(pw + "\n")
team, _ = Team.objects.get_or_create(name="opskit")
TeamMembership.objects.get_or_create(team=team, user=user, defaults={"role": TeamRole.ADMIN, "accepted": True})
project = Project.objects.filter(name="opskit", team=team).first() or Project.objects.create(name="opskit", team=team)
ProjectMembership.objects.get_or_create(project=project, user=user,
                                        defaults={"role": ProjectRole.ADMIN, "accepted": True})
with open(os.path.join(wd, "dsn"), "w") as f:
    f.write(project.dsn + "\n")
with open(os.path.join(wd, "python"), "w") as f:
    f.write(sys.executable + "\n")
'

cmd_start() {
    local port=${1:-}
    [[ "$port" =~ ^[0-9]+$ ]] || usage
    mkdir -p "$WD"
    if [ -f "$WD/server.pid" ] && pid_alive "$(cat "$WD/server.pid")"; then
        grep -q "@127.0.0.1:$port/" "$WD/dsn" 2>/dev/null || die "already running in $WD on another port"
        cat "$WD/dsn"; return 0
    fi
    port_free "$port" || die "127.0.0.1:$port is already in use"
    ensure_bugsink
    write_conf "$port"

    export DJANGO_SETTINGS_MODULE=bugsink_conf BS_WORKDIR="$WD"
    export PYTHONPATH="$WD${PYTHONPATH:+:$PYTHONPATH}"
    unset GUNICORN_CMD_ARGS SENTRY_DSN 2>/dev/null || true
    rm -f "$WD/dsn"
    (cd "$WD" && bugsink-manage shell -c "$SETUP_PY") >>"$WD/setup.log" 2>&1 \
        || { tail -n 30 "$WD/setup.log" >&2; die "setup (migrate/create project) failed; see $WD/setup.log"; }
    [ -s "$WD/dsn" ] || die "setup did not produce a DSN; see $WD/setup.log"
    local py; py=$(cat "$WD/python")

    mkdir -p -m 700 "$WD/ingestion"; chmod 700 "$WD/ingestion"   # bugsink warns (SECURITY) unless 0700
    rm -f "$WD/gunicorn.pid"
    # New session (setsid) so `stop` can signal master + worker as one process group; no stdin, detached.
    (cd "$WD" && exec setsid "$py" -m gunicorn --config "$WD/gunicorn.conf.py" bugsink.wsgi \
        </dev/null >>"$WD/server.log" 2>&1) &
    local pid=$!
    echo "$pid" > "$WD/server.pid"

    local deadline=$(( SECONDS + ${BUGSINK_START_TIMEOUT:-60} ))
    until http_ok "http://127.0.0.1:$port/health/ready"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$WD/server.log" >&2; rm -f "$WD/server.pid"; die "server exited during startup"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$WD/server.log" >&2; cmd_stop >/dev/null 2>&1 || true; die "server not ready in time"
        fi
        sleep 0.2
    done
    cat "$WD/dsn"
}

cmd_stop() {
    local pid=""
    [ -f "$WD/server.pid" ] && pid=$(cat "$WD/server.pid")
    if pid_alive "$pid"; then   # also guards against a stale pid file whose pid was reused
        # INT = gunicorn's quick shutdown (TERM is graceful and takes ~2-3 s longer); escalate to KILL below.
        kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do   # up to 10 s for gunicorn's graceful shutdown
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        for i in $(seq 1 20); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$WD/server.pid" "$WD/gunicorn.pid"
    rm -rf "$WD/ingestion" "$WD/snappea-wakeup"
    if [ "${BUGSINK_PURGE:-0}" = 1 ]; then
        rm -f "$WD"/db.sqlite3* "$WD"/snappea.sqlite3* "$WD"/test.sqlite3 "$WD/bugsink_conf.py" \
              "$WD/gunicorn.conf.py" "$WD"/*.log "$WD/dsn" "$WD/python" "$WD/admin-password"
        rm -rf "$WD/__pycache__"
        rmdir "$WD" 2>/dev/null || true
    fi
}

DB_PY='
import json, sqlite3, sys
db, mode = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, timeout=30)
if mode == "count":
    print(con.execute("SELECT COUNT(*) FROM events_event").fetchone()[0])
    sys.exit(0)
con.row_factory = sqlite3.Row
rows = con.execute(
    "SELECT e.id, e.event_id, e.project_id, e.issue_id, e.ingested_at, e.digested_at, e.timestamp, e.level,"
    " e.platform, e.[release], e.environment, e.server_name, e.[transaction], e.sdk_name, e.sdk_version,"
    " e.calculated_type, e.calculated_value, e.remote_addr, e.storage_backend, e.data"
    " FROM events_event e ORDER BY e.digest_order")
for r in rows:
    d = dict(r)
    for k in ("id", "event_id", "issue_id"):   # Django stores UUIDs as 32 hex chars in sqlite
        d[k] = str(d[k]).replace("-", "") if d[k] is not None else None
    try:
        d["data"] = json.loads(d["data"]) if d["data"] else None   # the event payload as stored
    except ValueError:
        pass
    print(json.dumps(d, sort_keys=True))
'

cmd_db() {  # $1 = count|dump
    if [ ! -f "$WD/db.sqlite3" ]; then
        [ "$1" = count ] && { echo 0; return 0; }
        return 0
    fi
    "$(sys_python)" -c "$DB_PY" "$WD/db.sqlite3" "$1"
}

mkdir -p "$wd_arg" 2>/dev/null || true
WD=$(cd "$wd_arg" 2>/dev/null && pwd -P) || die "workdir $wd_arg not usable"

case "$cmd" in
    start) cmd_start "${3:-}" ;;
    stop)  cmd_stop ;;
    count) cmd_db count ;;
    dump)  cmd_db dump ;;
    *)     usage ;;
esac

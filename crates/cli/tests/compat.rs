//! Compatibility: ordinary workloads (python3, bash, coreutils, git, gcc) run under the
//! BUILT-IN profiles and must print exactly what the same command prints unsandboxed on the
//! host, run as the same user. Every run must also end cleanly in the report: exited, code 0,
//! no violations (a violation here means a profile denies a syscall normal work needs).
//!
//! Workloads are deterministic and independent of hostname, uid, pid, cwd and environment;
//! both sides get the same locale, timezone and PATH, and work in a fresh temporary directory.

mod common;
use common::*;

const STRICT: &str = "ai-strict";
const DEV: &str = "ai-dev-safe";

/// PATH inside the sandbox (the engine's default); the host run uses the same.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Set identically on both sides, so locale, time zone and terminal cannot differ.
const BASE_ENV: &[(&str, &str)] = &[
    ("LANG", "C"),
    ("LC_ALL", "C"),
    ("TZ", "UTC"),
    ("TERM", "dumb"),
];

/// Runs `ironcage run --profile PROFILE --report FILE [--env K=V ...] -- CMD` as root or as
/// the test user, with the base environment plus `env`, and parses the report.
fn cage_profile(
    mode: Mode,
    profile: &str,
    env: &[(&str, &str)],
    cmd: &[&str],
    stdin: Option<&str>,
) -> Run {
    let env: Vec<String> = BASE_ENV
        .iter()
        .chain(env)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut args: Vec<&std::ffi::OsStr> = vec!["--profile".as_ref(), profile.as_ref()];
    for e in &env {
        args.push("--env".as_ref());
        args.push(e.as_ref());
    }
    run_with_report(mode, &args, cmd, stdin)
}

/// The unsandboxed reference: the same command on the host, as the same user (root, or the
/// test user through setpriv), cwd /tmp, with an environment reduced to PATH, HOME and TMPDIR
/// (a fresh directory) plus the base environment and `env`.
struct Host {
    code: i32,
    stdout: String,
    stderr: String,
}

fn host(mode: Mode, env: &[(&str, &str)], cmd: &[&str], stdin: Option<&str>) -> Host {
    let s = Scratch::new();
    let dir = s.path.display().to_string();
    let mut c = as_mode(mode, "/usr/bin/env");
    c.arg("-i")
        .arg(format!("PATH={PATH}"))
        .arg(format!("HOME={dir}"))
        .arg(format!("TMPDIR={dir}"));
    for (k, v) in BASE_ENV.iter().chain(env) {
        c.arg(format!("{k}={v}"));
    }
    c.args(cmd).current_dir("/tmp");
    let (code, stdout, stderr) = spawn(c, stdin);
    Host {
        code,
        stdout,
        stderr,
    }
}

/// Runs CMD in the sandbox under PROFILE and on the host; asserts a clean report and
/// identical output. Returns the sandbox run for workload-specific checks.
fn compat(
    mode: Mode,
    profile: &str,
    env: &[(&str, &str)],
    cmd: &[&str],
    stdin: Option<&str>,
) -> Run {
    let r = cage_profile(mode, profile, env, cmd, stdin);
    let h = host(mode, env, cmd, stdin);
    assert_eq!(
        h.code, 0,
        "the host reference failed (a broken test, not a sandbox bug)\n--- stdout\n{}\n--- stderr\n{}",
        h.stdout, h.stderr
    );
    assert_eq!(
        r.report["outcome"],
        "exited",
        "{profile}: outcome: {}",
        r.show()
    );
    assert_eq!(
        r.report["exit_code"],
        0,
        "{profile}: exit code in report: {}",
        r.show()
    );
    assert_eq!(r.code, 0, "{profile}: exit code: {}", r.show());
    assert_eq!(
        r.report["violations"],
        serde_json::json!([]),
        "{profile} denied a syscall this workload needs: {}",
        r.show()
    );
    assert_eq!(
        r.stdout,
        h.stdout,
        "{profile}: stdout differs from the host's\n--- host stderr\n{}\n--- sandbox: {}",
        h.stderr,
        r.show()
    );
    assert_eq!(
        r.stderr,
        h.stderr,
        "{profile}: stderr differs from the host's: {}",
        r.show()
    );
    assert!(
        r.stdout.ends_with("done\n"),
        "{profile}: the workload did not finish: {}",
        r.show()
    );
    r
}

/// Runs a bash script given as `bash -c SCRIPT`.
fn bash(mode: Mode, profile: &str, env: &[(&str, &str)], script: &str) -> Run {
    compat(mode, profile, env, &["/bin/bash", "-c", script], None)
}

/// Runs a python3 program from a file (multiprocessing's spawn re-imports the main module,
/// so `-c` will not do): the program arrives on stdin and is written to a fresh temp dir.
fn python(mode: Mode, profile: &str, program: &str) -> Run {
    let launcher =
        "set -e; d=$(mktemp -d); cat > \"$d/main.py\"; cd \"$d\"; exec /usr/bin/python3 main.py";
    compat(
        mode,
        profile,
        &[("PYTHONHASHSEED", "0")],
        &["/bin/bash", "-c", launcher],
        Some(program),
    )
}

// ---------------------------------------------------------------- python3

const PY_THREADS: &str = r#"
import concurrent.futures as cf
import hashlib
import queue
import threading

def digest(n):
    h = hashlib.sha256()
    for i in range(n * 200):
        h.update(i.to_bytes(4, "little"))
    return n, h.hexdigest()[:16]

with cf.ThreadPoolExecutor(max_workers=8) as ex:
    for n, d in ex.map(digest, range(1, 25)):
        print("map", n, d)
    futures = {ex.submit(sum, range(k * 1000)): k for k in range(12)}
    print("as_completed", sorted((futures[f], f.result()) for f in cf.as_completed(futures)))
    done, _ = cf.wait([ex.submit(pow, 3, k) for k in range(20)])
    print("wait", sorted(f.result() for f in done))

lock = threading.Lock()
total = [0]
def add(k):
    for _ in range(5000):
        with lock:
            total[0] += k
threads = [threading.Thread(target=add, args=(k,)) for k in range(1, 9)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("lock total", total[0])

q = queue.Queue()
results = []
def consumer():
    while (item := q.get()) is not None:
        results.append(item * item)
workers = [threading.Thread(target=consumer) for _ in range(4)]
for w in workers:
    w.start()
for i in range(1000):
    q.put(i)
for _ in workers:
    q.put(None)
for w in workers:
    w.join()
print("queue", len(results), sum(results))

barrier = threading.Barrier(5)
cond = threading.Condition()
ready = []
event = threading.Event()
local = threading.local()
def party(i):
    local.value = i * 10
    barrier.wait()
    with cond:
        ready.append(local.value)
        cond.notify_all()
    event.wait()
parties = [threading.Thread(target=party, args=(i,)) for i in range(5)]
for p in parties:
    p.start()
with cond:
    cond.wait_for(lambda: len(ready) == 5, timeout=60)
event.set()
for p in parties:
    p.join()
print("barrier", sorted(ready))

fired = threading.Event()
timer = threading.Timer(0.05, fired.set)
timer.start()
print("timer", fired.wait(60))
timer.join()
print("threads left", threading.active_count())
print("done")
"#;

const PY_MULTIPROCESSING: &str = r#"
import concurrent.futures as cf
import multiprocessing as mp
from multiprocessing import shared_memory

def square(x):
    return x * x

def collatz(n):
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps

def producer(q, start, n):
    for i in range(start, start + n):
        q.put((i, i * i))
    q.put(None)

def bump(counter, lock, n):
    for _ in range(n):
        with lock:
            counter.value += 1

def echo(conn):
    while (msg := conn.recv()) is not None:
        conn.send(msg[::-1])
    conn.close()

def fill(name, k):
    shm = shared_memory.SharedMemory(name=name)
    shm.buf[k] = k * 2
    shm.close()

def main():
    for method in ("fork", "spawn", "forkserver"):
        ctx = mp.get_context(method)
        with ctx.Pool(4) as pool:
            print(method, "pool.map", sum(pool.map(square, range(1000))))
            print(method, "pool.imap", list(pool.imap(collatz, range(1, 30))))
            print(method, "pool.starmap", pool.starmap(pow, [(2, 10), (3, 5), (7, 3)]))
            print(method, "pool.apply_async", pool.apply_async(collatz, (27,)).get(timeout=60))

        q = ctx.Queue()
        procs = [ctx.Process(target=producer, args=(q, k * 100, 50)) for k in range(3)]
        for p in procs:
            p.start()
        got, finished = [], 0
        while finished < len(procs):
            item = q.get(timeout=60)
            if item is None:
                finished += 1
            else:
                got.append(item)
        for p in procs:
            p.join()
        print(method, "queue", len(got), sum(a for a, _ in got), sum(b for _, b in got),
              [p.exitcode for p in procs])

        counter, lock = ctx.Value("i", 0), ctx.Lock()
        procs = [ctx.Process(target=bump, args=(counter, lock, 300)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print(method, "value", counter.value)

        parent, child = ctx.Pipe()
        p = ctx.Process(target=echo, args=(child,))
        p.start()
        replies = []
        for word in ("alpha", "beta", "gamma"):
            parent.send(word)
            replies.append(parent.recv())
        parent.send(None)
        p.join()
        print(method, "pipe", replies, p.exitcode)

        with cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
            print(method, "ProcessPoolExecutor", list(ex.map(collatz, [7, 97, 871])))

    shm = shared_memory.SharedMemory(create=True, size=16)
    try:
        fork = mp.get_context("fork")
        procs = [fork.Process(target=fill, args=(shm.name, k)) for k in range(16)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print("shared_memory", list(shm.buf[:16]))
    finally:
        shm.close()
        shm.unlink()

    with mp.Manager() as manager:
        d = manager.dict()
        lst = manager.list()
        for k in range(5):
            d[k] = k * k
            lst.append(str(k))
        print("manager", sorted(d.items()), list(lst))
    print("done")

if __name__ == "__main__":
    main()
"#;

const PY_SUBPROCESS: &str = r#"
import os
import subprocess
import sys

r = subprocess.run(["/bin/echo", "hello", "from", "echo"], capture_output=True, text=True)
print("run", repr(r.stdout), r.returncode)

p1 = subprocess.Popen(["seq", "1", "1000"], stdout=subprocess.PIPE)
p2 = subprocess.Popen(["awk", "{ s += $1 } END { print s }"], stdin=p1.stdout,
                      stdout=subprocess.PIPE, text=True)
p1.stdout.close()
out, _ = p2.communicate()
print("pipe", out.strip(), p1.wait(), p2.returncode)

r = subprocess.run([sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"],
                   input="shout this\n", capture_output=True, text=True)
print("stdin", repr(r.stdout), r.returncode)

r = subprocess.run("echo out; echo err >&2; exit 3", shell=True, capture_output=True, text=True)
print("shell", repr(r.stdout), repr(r.stderr), r.returncode)

print("check_output", subprocess.check_output(["sort", "-r"], input=b"a\nc\nb\n"))
try:
    subprocess.run(["/bin/false"], check=True)
except subprocess.CalledProcessError as e:
    print("check", e.returncode)
try:
    subprocess.run(["/bin/sleep", "10"], timeout=0.3)
except subprocess.TimeoutExpired:
    print("timeout expired")

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, b"from the child")
    os._exit(7)
os.close(w)
data = os.read(r, 100)
_, status = os.waitpid(pid, 0)
print("fork", data, os.waitstatus_to_exitcode(status))

pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 5"], {})
print("posix_spawn", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("done")
"#;

const PY_STDLIB: &str = r#"
import datetime
import decimal
import gzip
import hashlib
import json
import os
import random
import sqlite3
import tempfile
import zlib

data = b"The quick brown fox jumps over the lazy dog" * 100
for name in ("md5", "sha1", "sha256", "sha512", "sha3_256", "blake2b"):
    print(name, hashlib.new(name, data).hexdigest())
print("pbkdf2", hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1000).hex())

doc = {"name": "cage", "list": list(range(10)), "nested": {"b": [1.5, None, True], "a": "\u00e9"}}
text = json.dumps(doc, sort_keys=True)
print("json", text)
print("json roundtrip", json.loads(text) == doc, json.dumps(doc, indent=1, sort_keys=True).count("\n"))

db = sqlite3.connect(":memory:")
db.execute("create table t (id integer primary key, name text, value real)")
db.executemany("insert into t (name, value) values (?, ?)",
               [(f"row{i % 17}", i * 0.5) for i in range(5000)])
db.execute("create index t_name on t (name)")
db.commit()
print("sqlite", db.execute("select count(*), sum(value), count(distinct name) from t").fetchone())
print("sqlite group", db.execute(
    "select name, count(*), max(value) from t group by name order by name limit 4").fetchall())
print("sqlite version ok", sqlite3.sqlite_version_info >= (3, 0, 0))

with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "file.db")
    disk = sqlite3.connect(path)
    disk.execute("pragma journal_mode=wal")
    disk.execute("create table kv (k text primary key, v text)")
    with disk:
        disk.executemany("insert into kv values (?, ?)", [(str(i), str(i * i)) for i in range(500)])
    other = sqlite3.connect(path)
    print("sqlite file", other.execute("select count(*), max(cast(v as integer)) from kv").fetchone())
    other.close()
    disk.close()
    with gzip.GzipFile(os.path.join(d, "x.gz"), "wb", mtime=0) as f:
        f.write(data)
    with gzip.open(os.path.join(d, "x.gz"), "rb") as f:
        print("gzip", f.read() == data)

print("zlib", zlib.crc32(data), len(zlib.compress(data, 9)))
rng = random.Random(42)
print("random", [rng.randint(0, 1000) for _ in range(8)])
decimal.getcontext().prec = 40
print("decimal", decimal.Decimal(2).sqrt())
print("datetime", datetime.datetime.fromtimestamp(1700000000).isoformat())
print("done")
"#;

both_modes!(
    fn python_threads_ai_strict(mode: Mode) {
        let r = python(mode, STRICT, PY_THREADS);
        assert!(r.stdout.contains("lock total 180000\n"), "{}", r.show());
    }
);
both_modes!(
    fn python_threads_ai_dev_safe(mode: Mode) {
        let r = python(mode, DEV, PY_THREADS);
        assert!(r.stdout.contains("queue 1000 332833500\n"), "{}", r.show());
    }
);
both_modes!(
    fn python_multiprocessing_ai_strict(mode: Mode) {
        let r = python(mode, STRICT, PY_MULTIPROCESSING);
        assert!(
            r.stdout.contains("forkserver pool.map 332833500\n"),
            "{}",
            r.show()
        );
    }
);
both_modes!(
    fn python_multiprocessing_ai_dev_safe(mode: Mode) {
        let r = python(mode, DEV, PY_MULTIPROCESSING);
        assert!(r.stdout.contains("spawn value 1200\n"), "{}", r.show());
    }
);
both_modes!(
    fn python_subprocess_ai_strict(mode: Mode) {
        let r = python(mode, STRICT, PY_SUBPROCESS);
        assert!(r.stdout.contains("pipe 500500 0 0\n"), "{}", r.show());
    }
);
both_modes!(
    fn python_subprocess_ai_dev_safe(mode: Mode) {
        let r = python(mode, DEV, PY_SUBPROCESS);
        assert!(
            r.stdout.contains("run 'hello from echo\\n' 0\n"),
            "{}",
            r.show()
        );
    }
);
both_modes!(
    fn python_stdlib_ai_strict(mode: Mode) {
        let r = python(mode, STRICT, PY_STDLIB);
        assert!(
            r.stdout.contains("sqlite file (500, 249001)\n"),
            "{}",
            r.show()
        );
    }
);
both_modes!(
    fn python_stdlib_ai_dev_safe(mode: Mode) {
        let r = python(mode, DEV, PY_STDLIB);
        assert!(
            r.stdout.contains("sqlite (5000, 6248750.0, 17)\n"),
            "{}",
            r.show()
        );
    }
);

// ---------------------------------------------------------------- bash

const BASH_PIPELINES: &str = r#"
set -euo pipefail
d=$(mktemp -d)
cd "$d"
seq 1 1000 | awk '$1 % 7 == 0 { print $1 * 3 }' | sort -rn | head -n 12 | tr '0-9' 'a-j' | wc -l
seq 1 1000 | awk '{ s += $1 } END { print "sum", s }'
seq 1 50 | sort -r | head -n 5 | tr '\n' ' ' | wc -c
printf '%s\n' pear apple fig apple kiwi fig apple | sort | uniq -c | sort -k1,1nr -k2 | head -3
cat <<'EOF' | sort | tr 'a-z' 'A-Z'
cherry $HOME `not run`
banana
apple
EOF
name=world
cat <<EOF
here-doc says hello $name, $(echo nested $(echo deeper)), $((6 * 7))
EOF
tr 'a-z' 'n-za-m' <<< "here-string"
diff <(seq 1 5) <(seq 0 2 8) || echo "diff exit $?"
paste <(seq 1 3) <(printf '%s\n' one two three) <(seq 10 10 30)
while read -r n word; do echo "$word=$n"; done < <(printf '%s %s\n' 1 one 2 two 3 three)
mapfile -t lines < <(seq 5 -1 1)
echo "mapfile ${#lines[@]}: ${lines[*]}"
echo "command substitution: $(seq 1 100 | paste -sd+ | sed 's/+/ + /g' | wc -w) words, $(( $(seq 1 100 | paste -sd+) ))"
outer=$(inner=$(echo abc | rev); echo "${inner^^}")
echo "nested: $outer"
# The output process substitution writes into the pipe to cat, which ends only after it.
seq 1 20 | { tee >(awk '{ s += $1 } END { print "tee sum", s }') > tee-all; } | cat
tail -n 2 tee-all
{ echo b; echo a; } > group.txt; sort group.txt
( cd /; pwd ); echo "subshell kept cwd: $([ "$PWD" = "$d" ] && echo yes)"
coproc UPPER { tr 'a-z' 'A-Z'; }
# bash unsets UPPER and closes its descriptors once it reaps the coprocess: keep copies.
upper_pid=$UPPER_PID
exec {upper_out}<&"${UPPER[0]}"
echo "coprocess" >&"${UPPER[1]}"
eval "exec ${UPPER[1]}>&-"
read -r reply <&"$upper_out"
wait "$upper_pid"
echo "$reply"
f() { local x=$1; echo $(( x * x )); }
for i in 3 4 5; do f "$i"; done | xargs echo squares
printf '%s\0' c b a | sort -z | xargs -0 -n1 echo | tr '\n' ,
echo
set +e; false | true; echo "pipefail status ${PIPESTATUS[*]}"; set -e
(trap 'echo trapped EXIT' EXIT; true)
echo done
"#;

both_modes!(
    fn bash_pipelines_ai_strict(mode: Mode) {
        let r = bash(mode, STRICT, &[], BASH_PIPELINES);
        assert!(r.stdout.starts_with("12\nsum 500500\n"), "{}", r.show());
    }
);
both_modes!(
    fn bash_pipelines_ai_dev_safe(mode: Mode) {
        let r = bash(mode, DEV, &[], BASH_PIPELINES);
        assert!(r.stdout.contains("nested: CBA\n"), "{}", r.show());
    }
);

// ---------------------------------------------------------------- coreutils

const COREUTILS: &str = r#"
set -euo pipefail
umask 022
d=$(mktemp -d)
cd "$d"
mkdir -p src/sub/deeper empty
printf 'alpha\nbeta\ngamma\nalpha\n' > src/a.txt
printf '%s\n' 3 1 2 3 1 3 > src/sub/nums
seq 1 500 > src/sub/deeper/seq
head -c 3000 /dev/zero | tr '\0' 'x' > src/sub/xs
cp -r src dst
cp -p src/a.txt copy.txt
cp -a src archive-copy
install -m 751 src/a.txt installed
stat -c '%a %n' archive-copy/a.txt installed
# /var/tmp is another file system in the sandbox: mv copies, preserving mode and ACLs.
v=$(mktemp -d -p /var/tmp)
trap 'rm -rf "$v"' EXIT
cp src/a.txt moved
chmod 640 moved
mv moved "$v/"
mv "$v/moved" moved
stat -c '%a %s %n' moved
rm -r archive-copy installed moved
mv dst/a.txt dst/renamed.txt
ln -s ../src/a.txt dst/link
ln src/sub/nums hard
echo "readlink $(readlink dst/link) -> $(head -n 1 dst/link)"
chmod 600 dst/renamed.txt
chmod 750 dst/sub
chmod u+x,g-r dst/sub/nums
stat -c '%a %F %h %s %n' dst/renamed.txt dst/sub/nums dst/link hard copy.txt
stat -c '%a %F %n' dst/sub src/sub/deeper
touch -d '2020-02-02 02:02:02' copy.txt
stat -c '%Y %y %n' copy.txt
du -b src/a.txt src/sub/nums src/sub/deeper/seq src/sub/xs
du -cb src/a.txt src/sub/xs | tail -n 1
sort src/sub/nums | uniq -c
sort -u src/a.txt
sort -n src/sub/nums | uniq -d
sha256sum src/a.txt src/sub/nums src/sub/deeper/seq src/sub/xs
md5sum dst/renamed.txt
find src dst -print | sort
find . -type l -printf '%p -> %l\n' | sort
wc src/a.txt src/sub/deeper/seq
cut -c1-3 src/a.txt | paste -sd: -
comm -12 <(sort src/a.txt) <(printf 'alpha\ndelta\n')
split -l 200 src/sub/deeper/seq part.
ls part.*
cat part.* | cmp - src/sub/deeper/seq && echo "split/cat identical"
base64 src/a.txt | base64 -d | diff - src/a.txt && echo "base64 roundtrip"
od -An -tx1 -N8 src/a.txt
nl -ba src/a.txt | tail -n 2
tar --sort=name --mtime='2020-01-01 00:00:00' --owner=0 --group=0 --numeric-owner -czf out.tgz src dst
tar tzf out.tgz
tar tvzf out.tgz
mkdir unpacked
tar xzf out.tgz -C unpacked
diff -r src unpacked/src && echo "tar roundtrip identical"
rm -r dst unpacked
rmdir empty
ls
echo done
"#;

both_modes!(
    fn coreutils_ai_strict(mode: Mode) {
        let r = bash(mode, STRICT, &[], COREUTILS);
        assert!(
            r.stdout.contains("tar roundtrip identical\n"),
            "{}",
            r.show()
        );
    }
);
both_modes!(
    fn coreutils_ai_dev_safe(mode: Mode) {
        let r = bash(mode, DEV, &[], COREUTILS);
        assert!(
            r.stdout.contains("600 regular file 1 23 dst/renamed.txt\n"),
            "{}",
            r.show()
        );
    }
);

// ---------------------------------------------------------------- git

/// Fixed identity and dates; no system or global git config on either side.
const GIT_ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_DATE", "2024-01-02T03:04:05+00:00"),
    ("GIT_COMMITTER_DATE", "2024-01-02T03:04:05+00:00"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
];

const GIT: &str = r#"
set -euo pipefail
umask 022
d=$(mktemp -d)
cd "$d"
g() { git -c user.name='Iron Cage' -c user.email=cage@example.com -c init.defaultBranch=main "$@"; }
g init -q repo
cd repo
printf 'hello\n' > README
mkdir src
printf 'int main(void) { return 0; }\n' > src/main.c
printf '#!/bin/sh\necho run\n' > run.sh
chmod +x run.sh
ln -s README link
g add .
g commit -q -m "first commit"
echo "more" >> README
g commit -q -a -m "second commit"
g checkout -q -b feature
echo "feature" > feature.txt
g add feature.txt
g commit -q -m "feature work"
g checkout -q main
g merge -q --no-ff -m "merge feature" feature
g tag -a v1 -m "version 1"
g log --format='%H %s'
g cat-file -p 'HEAD^{tree}'
g cat-file -p HEAD
g rev-parse v1 'HEAD^{tree}' HEAD~1:src
g ls-files -s
g diff --stat HEAD~2 HEAD
g show --format='%an <%ae> %ad' --date=iso-strict --name-status HEAD~1
g status --porcelain
echo dirty >> README
g status --porcelain
g diff
g stash -q
g status --porcelain
g archive --format=tar HEAD | tar tf - | sort
g archive --format=tar HEAD | sha256sum
g gc -q
g fsck --no-progress
g clone -q . ../clone
g -C ../clone log --format='%H %d %s' --decorate=short
g -C ../clone cat-file -t v1
echo done
"#;

both_modes!(
    fn git_ai_strict(mode: Mode) {
        let r = bash(mode, STRICT, GIT_ENV, GIT);
        let subjects: Vec<&str> = r
            .stdout
            .lines()
            .take(4)
            .map(|l| match l.split_once(' ') {
                Some((hash, subject))
                    if hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    subject
                }
                _ => panic!("not `HASH SUBJECT`: {l:?}: {}", r.show()),
            })
            .collect();
        assert_eq!(
            subjects,
            [
                "merge feature",
                "second commit",
                "feature work",
                "first commit"
            ],
            "{}",
            r.show()
        );
    }
);
both_modes!(
    fn git_ai_dev_safe(mode: Mode) {
        let r = bash(mode, DEV, GIT_ENV, GIT);
        assert!(r.stdout.contains(" merge feature\n"), "{}", r.show());
    }
);

// ---------------------------------------------------------------- gcc

const GCC: &str = r#"
set -euo pipefail
cd "$TMPDIR"
cat > prog.c <<'EOF'
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void *worker(void *arg) {
    long k = (long)arg, sum = 0;
    for (long i = 0; i < 100000; i++) sum += (i * k) % 7;
    return (void *)sum;
}

int main(void) {
    int n = 0;
    for (int i = 2; i < 10000; i++) {
        int prime = 1;
        for (int j = 2; j * j <= i; j++) if (i % j == 0) { prime = 0; break; }
        n += prime;
    }
    printf("primes below 10000: %d\n", n);

    int v[16];
    uint32_t seed = 12345;
    for (int i = 0; i < 16; i++) { seed = seed * 1103515245u + 12345u; v[i] = (int)(seed >> 16) % 1000; }
    qsort(v, 16, sizeof v[0], cmp);
    for (int i = 0; i < 16; i++) printf("%d%c", v[i], i == 15 ? '\n' : ' ');

    uint64_t h = 1469598103934665603ull;
    const char *s = "iron cage";
    for (size_t i = 0; i < strlen(s); i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    printf("fnv1a %016llx\n", (unsigned long long)h);
    printf("math %.10f %.10f\n", sqrt(2.0), sin(1.0) + exp(1.0));

    pthread_t t[4];
    for (long k = 0; k < 4; k++) pthread_create(&t[k], NULL, worker, (void *)(k + 1));
    long total = 0;
    for (int k = 0; k < 4; k++) { void *r; pthread_join(t[k], &r); total += (long)r; }
    printf("threads %ld\n", total);

    char *buf = malloc(1 << 20);
    memset(buf, 'z', 1 << 20);
    FILE *f = fopen("out.bin", "w");
    fwrite(buf, 1, 1 << 20, f);
    fclose(f);
    free(buf);
    return 0;
}
EOF
gcc -O2 -Wall -o "$TMPDIR/a.out" prog.c -lm -lpthread
"$TMPDIR/a.out"
sha256sum out.bin
printf '#include <stdio.h>\nint main(void) { puts("compiled from stdin"); return 0; }\n' | gcc -x c -O2 -o from-stdin -
./from-stdin
cat > lib.c <<'EOF'
int triple(int x) { return 3 * x; }
EOF
cat > use.c <<'EOF'
#include <stdio.h>
int triple(int);
int main(void) { printf("triple %d\n", triple(14)); return 0; }
EOF
gcc -O2 -fPIC -shared -o libtriple.so lib.c
gcc -O2 -o use-shared use.c -L. -ltriple
LD_LIBRARY_PATH=. ./use-shared
gcc -O2 -c lib.c -o lib.o
ar rcs libtriple.a lib.o
gcc -O2 -static-libgcc -o use-static use.c libtriple.a
./use-static
gcc -E -P - <<'EOF'
#define SQUARE(x) ((x) * (x))
int nine = SQUARE(3);
EOF
echo done
"#;

both_modes!(
    fn gcc_ai_dev_safe(mode: Mode) {
        let r = bash(mode, DEV, &[], GCC);
        assert!(
            r.stdout.contains("primes below 10000: 1229\n"),
            "{}",
            r.show()
        );
        assert!(r.stdout.contains("triple 42\n"), "{}", r.show());
    }
);

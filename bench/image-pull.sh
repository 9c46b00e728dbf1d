#!/usr/bin/env bash
# Cold pull of a ~250 MiB (gzip), 10-layer image from a registry on
# loopback: `berth pull` vs `podman pull`, `skopeo copy` (to an OCI layout,
# and to containers-storage) and `docker pull` (a private dockerd, when one
# can run), plus the floor: decompressing every layer blob in parallel on
# all cores to /dev/null, and two references: `pigz -dc | tar -x` of every
# layer, without and with a final syncfs. Timed with hyperfine in
# interleaved rounds; appends a section to bench/RESULTS.md and keeps the
# merged hyperfine JSON under bench/results/.
# See bench/README.md.
#
# Usage: bench/image-pull.sh            (as root)
# Environment:
#   RUNS=10              timed runs per tool (at least 5), in interleaved rounds
#   TOOLS="berth podman skopeo-oci skopeo-storage docker gzip pigz untar untar-sync"
#   BENCH_CACHE=/var/tmp/berth-bench   where the generated image is kept
#   REBUILD_IMAGE=1      regenerate the cached image
#   PORT=N               registry port (default: a free one picked at start)
#   STORE=loop|host      where the tools' stores live: a fresh ext4 on a loop
#                        file (default), or the filesystem of /var/tmp
#   STORE_SIZE=16G       size of the (sparse) loop file
#   NO_BUILD=1           use the existing build of scripts/build-release
#   BERTH=path           the berth binary to time (implies NO_BUILD)
#   BERTH_BASE=path      a second berth binary, timed as tool "berth-base"
#                        (add it to TOOLS): an A/B of two builds in the same rounds
#   RESULTS=path         markdown file to append to (default bench/RESULTS.md)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
RUNS=${RUNS:-10}
TOOLS=${TOOLS:-"berth podman skopeo-oci skopeo-storage docker gzip pigz untar untar-sync"}
BENCH_CACHE=${BENCH_CACHE:-/var/tmp/berth-bench}
STORE=${STORE:-loop}
STORE_SIZE=${STORE_SIZE:-16G}
RESULTS=${RESULTS:-$here/RESULTS.md}
IMAGE_VERSION=1 # bump when the generator below changes
NAME=bench/image-pull:latest

die() { echo "image-pull: $*" >&2; exit 1; }
log() { echo "image-pull: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (podman/docker storage, mounts)"
[ "$RUNS" -ge 5 ] || die "RUNS must be at least 5 (got $RUNS)"
for t in hyperfine jq cargo python3 skopeo curl gzip tar; do
  command -v "$t" >/dev/null || die "$t not found (apt-get install -y hyperfine jq skopeo curl; rustup for cargo)"
done
command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] ||
  die "docker-registry not found (apt-get install -y docker-registry)"

# ---------------------------------------------------------------- build
# The release binary as shipped: static, built by scripts/build-release.
if [ -z "${NO_BUILD:-}" ] && [ -z "${BERTH:-}" ]; then
  log "building berth (release, static)"
  BERTH=$(bash "$repo/scripts/build-release")
fi
BERTH=${BERTH:-$repo/target/$(rustc -vV | sed -n 's/^host: //p')/release/berth}
[ -x "$BERTH" ] || die "$BERTH missing (build it with scripts/build-release)"

# ---------------------------------------------------------------- image
# An OCI layout with 10 gzip layers built from this host's /usr (shared
# libraries, executables, python, locales + man pages, docs, a JVM, a Go
# toolchain, headers), one layer of incompressible random data and a small
# last layer with config files and whiteouts. Built once, cached.
image=$BENCH_CACHE/image-pull-v$IMAGE_VERSION
if [ -n "${REBUILD_IMAGE:-}" ] || [ ! -s "$image/image.json" ]; then
  log "generating the benchmark image in $image (about a minute)"
  rm -rf "$image" "$image.tmp"
  mkdir -p "$image.tmp"
  python3 - "$image.tmp" <<'PY'
import glob, hashlib, io, json, os, random, shutil, stat, subprocess, sys, tarfile

out = sys.argv[1]
MTIME = 946684800  # 2000-01-01T00:00:00Z
CREATED = "2000-01-01T00:00:00Z"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
MB = 1 << 20

# (what, [(directory glob on this host, byte budget)]): regular files are
# taken in sorted order from each source until its budget (uncompressed) is
# used up; symlinks come along; directories are created as needed.
LAYERS = [
    ("shared libraries", [("/usr/lib/x86_64-linux-gnu", 120 * MB)]),
    ("executables", [("/usr/bin", 90 * MB), ("/usr/sbin", 10 * MB)]),
    ("python runtime", [("/usr/lib/python3.1[0-9]", 60 * MB), ("/usr/lib/python3", 40 * MB)]),
    ("locales and manuals", [("/usr/share/locale", 35 * MB), ("/usr/share/i18n", 15 * MB), ("/usr/share/man", 25 * MB)]),
    ("documentation", [("/usr/share/doc", 30 * MB)]),
    ("java runtime", [("/usr/lib/jvm/java-*-openjdk-*", 40 * MB)]),
    ("go toolchain", [("/usr/lib/go-1.*", 60 * MB)]),
    ("random assets", "random"),
    ("headers", [("/usr/include", 40 * MB)]),
    ("final config", "final"),
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(MB):
            h.update(b)
    return "sha256:" + h.hexdigest()


def info(name, type_, mode, size=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.size = type_, mode, MTIME, size
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


class Rand:
    """n pseudo-random (incompressible, reproducible) bytes as a file."""

    def __init__(self, seed, n):
        self.r, self.left = random.Random(seed), n

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.r.randbytes(n)


class Layer:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.tar = tarfile.open(fileobj=self.f, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs, self.files = set(), 0

    def parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(info(d + "/", tarfile.DIRTYPE, 0o755))

    def file(self, name, fileobj, size, mode=0o644):
        self.parents(name)
        self.tar.addfile(info(name, tarfile.REGTYPE, mode, size), fileobj)
        self.files += 1

    def tree(self, src, budget):
        taken = 0
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for fn in sorted(filenames + links):
                p = os.path.join(dirpath, fn)
                name = p.lstrip("/")
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    self.parents(name)
                    ti = info(name, tarfile.SYMTYPE, 0o777)
                    ti.linkname = os.readlink(p)
                    self.tar.addfile(ti)
                elif stat.S_ISREG(st.st_mode) and taken + st.st_size <= budget:
                    try:
                        with open(p, "rb") as fh:
                            self.file(name, fh, st.st_size, stat.S_IMODE(st.st_mode) & 0o755 | 0o444)
                    except OSError:
                        continue
                    taken += st.st_size
                if taken >= budget:
                    return

    def close(self):
        self.tar.close()
        self.f.close()


blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
gz = ["pigz" if shutil.which("pigz") else "gzip", "-6", "-n", "-c"]
descs, diff_ids, history, summary = [], [], [], []
for i, (what, spec) in enumerate(LAYERS):
    tmp = os.path.join(out, f"layer{i}.tar")
    l = Layer(tmp)
    if spec == "random":
        # Incompressible data (model weights, media): 6 files of 4 MiB.
        for j in range(6):
            l.file(f"opt/assets/blob{j}.bin", Rand(j, 4 * MB), 4 * MB)
    elif spec == "final":
        # What a Dockerfile's last steps leave: config files and deletions.
        for name, data in [("etc/app/app.conf", b"listen = 0.0.0.0:8080\nworkers = 4\n"),
                           ("etc/app/env", b"APP_ENV=production\n")]:
            l.file(name, io.BytesIO(data), len(data))
        l.parents("usr/share/doc/x")
        l.tar.addfile(info("usr/share/doc/.wh..wh..opq", tarfile.REGTYPE, 0o644))
        l.parents("opt/assets/x")
        l.tar.addfile(info("opt/assets/.wh.blob5.bin", tarfile.REGTYPE, 0o644))
    else:
        for pattern, budget in spec:
            # The newest version of a versioned directory, never a symlink to one.
            for src in sorted((g for g in glob.glob(pattern) if not os.path.islink(g)), reverse=True)[:1]:
                if os.path.isdir(src):
                    l.tree(src, budget)
    l.close()
    diff = sha256_file(tmp)
    with open(tmp, "rb") as fi, open(tmp + ".gz", "wb") as fo:
        subprocess.run(gz, stdin=fi, stdout=fo, check=True)
    digest, size, usize = sha256_file(tmp + ".gz"), os.path.getsize(tmp + ".gz"), os.path.getsize(tmp)
    os.replace(tmp + ".gz", os.path.join(blobs, digest.split(":")[1]))
    os.remove(tmp)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    diff_ids.append(diff)
    history.append({"created": CREATED, "created_by": f"berth bench image-pull: {what}"})
    summary.append({"layer": i + 1, "content": what, "files": l.files, "compressed": size, "uncompressed": usize,
                    "digest": digest})
    print(f"layer {i + 1:2} {what:20} {l.files:6} files {usize / MB:6.1f} MiB tar {size / MB:6.1f} MiB gzip",
          file=sys.stderr)


def blob(obj, mt):
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d.split(":")[1]), "wb") as f:
        f.write(data)
    return {"mediaType": mt, "digest": d, "size": len(data)}


config = blob({"created": CREATED, "architecture": ARCH, "os": "linux",
               "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                          "Cmd": ["/bin/sh"], "WorkingDir": "/"},
               "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history},
              "application/vnd.oci.image.config.v1+json")
manifest = blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "config": config, "layers": descs}, "application/vnd.oci.image.manifest.v1+json")
manifest["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest]}, f)
with open(os.path.join(out, "image.json"), "w") as f:
    json.dump({"manifest": manifest["digest"], "layers": summary,
               "compressed": sum(s["compressed"] for s in summary),
               "uncompressed": sum(s["uncompressed"] for s in summary),
               "files": sum(s["files"] for s in summary)}, f, indent=1)
PY
  mv "$image.tmp" "$image"
fi
img_c=$(jq '.compressed' "$image/image.json")
img_u=$(jq '.uncompressed' "$image/image.json")
img_files=$(jq '.files' "$image/image.json")
img_layers=$(jq '.layers | length' "$image/image.json")
img_digest=$(jq -r '.manifest' "$image/image.json")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
[ "$img_c" -ge $((150 << 20)) ] || log "WARNING: the image is only $(mib "$img_c") MiB compressed (this host's /usr is small)"
log "image: $img_layers layers, $(mib "$img_c") MiB gzip, $(mib "$img_u") MiB tar, $img_files files"

# ---------------------------------------------------------------- work dir
work=$(mktemp -d /var/tmp/berth-image-pull.XXXXXX)
layers_list=$work/layers.txt
jq -r --arg d "$image/blobs/sha256/" '.layers[].digest | sub("sha256:"; $d)' "$image/image.json" >"$layers_list"

# Unmounts everything at or under $1, deepest first.
unmount_under() {
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}

stop_pidfile() { # stops the process whose pid is in $1 (TERM, then KILL)
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  set +e
  if [ -d "$work/docker" ]; then
    stop_pidfile "$work/docker/docker.pid"
    stop_pidfile "$work/docker/exec/containerd/containerd.pid"
  fi
  "$repo/scripts/test-registry" stop "$work/registry" 2>/dev/null
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- stores
# Every tool's store lives under $S. By default that is a fresh ext4
# (mkfs defaults, with a journal) on a sparse loop file: the same
# filesystem for every tool, away from other users' I/O. On an ext4 without
# a journal (this project's VMs' root fs: /proc/fs/jbd2 has no entry for
# it) the inode allocator skips every inode freed in the last 60 s
# (ext4 ialloc.c recently_deleted(), only checked without a journal), so
# unpacking ~30 000 files right after removing the previous run's ~30 000
# costs 3-6x more system time for every tool: not what a pull costs.
S=$work/stores
mkdir -p "$S"
case $STORE in
  loop)
    command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 not found (apt-get install -y e2fsprogs), or use STORE=host"
    truncate -s "$STORE_SIZE" "$work/stores.img"
    mkfs.ext4 -q -F -L berth-bench "$work/stores.img"
    mount -o loop "$work/stores.img" "$S" || die "cannot loop-mount an ext4 (STORE=host stores on $work's filesystem)"
    store_desc="a fresh ext4 on a loop device (mkfs.ext4 defaults, journal on; sparse $STORE_SIZE file on $(findmnt -no FSTYPE --target "$work") $(findmnt -no SOURCE --target "$work"))"
    ;;
  host)
    store_desc="$(findmnt -no FSTYPE --target "$work") $(findmnt -no SOURCE --target "$work") ($work)"
    dev=$(findmnt -no SOURCE --target "$work")
    if [ "$(findmnt -no FSTYPE --target "$work")" = ext4 ] && [ -d /proc/fs/jbd2 ] && [ ! -e "/proc/fs/jbd2/${dev##*/}-8" ]; then
      store_desc="$store_desc **without a journal**"
      log "WARNING: $dev is an ext4 without a journal: unpacking right after the previous run's removal is slowed down by the kernel (see the comment above)"
    fi
    ;;
  *) die "STORE must be loop or host (got $STORE)" ;;
esac

# ---------------------------------------------------------------- registry
if [ -z "${PORT:-}" ]; then
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
"$repo/scripts/test-registry" start "$work/registry" "$PORT" >&2
ref=127.0.0.1:$PORT/$NAME
log "pushing the image to $ref"
skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$image:latest" "docker://$ref" >&2

# ---------------------------------------------------------------- tools
# Per tool: the timed command (run without a shell), and a reset script
# that removes everything the previous run stored (untimed, hyperfine's
# --prepare). Every reset ends with `sync`, so that one run's dirty pages
# are not written back during the next.
mkdir -p "$work/bin"
cat >"$work/bin/podman-env" <<EOF
#!/bin/sh
# podman/skopeo with the config in \$1 and storage, run state and tmp under
# \$2, isolated from the host's /var/lib/containers and /etc/containers.
d=\$1 data=\$2; shift 2
exec env CONTAINERS_CONF=\$d/containers.conf CONTAINERS_STORAGE_CONF=\$d/storage.conf \\
  CONTAINERS_REGISTRIES_CONF=\$d/registries.conf TMPDIR=\$data/tmp "\$@"
EOF
setup_containers_dir() { # CONFIG-DIR DATA-DIR
  local d=$1 data=$2 nofile nproc
  # Default ulimits within the host's hard limits (see /work/shared/HOST.md
  # and scripts/podman-test-env); pulling does not use them.
  mkdir -p "$d"
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 1024 ] && nofile=1024
  nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ] && nproc=4096
  cat >"$d/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "$data/tmp"
EOF
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$data/storage" "$data/run" >"$d/storage.conf"
  printf 'unqualified-search-registries = []\n' >"$d/registries.conf"
}
cat >"$work/bin/reset-dir" <<EOF
#!/bin/sh
# Empties a tool's destination: unmount what is under it, remove, sync.
d=\$1
awk -v d="\$d" '\$5 == d || index(\$5, d "/") == 1 { print \$5 }' /proc/self/mountinfo |
  awk '{ print gsub("/", "/"), \$0 }' | sort -rn | cut -d' ' -f2- |
  while read -r m; do umount "\$m" 2>/dev/null || umount -l "\$m"; done
rm -rf "\$d"
[ -z "\$2" ] || mkdir -p "\$2"
sync
EOF
cat >"$work/bin/untar-one" <<EOF
#!/bin/sh
# The untar references: one layer blob (\$2), decompressed and extracted
# into its own directory under \$1.
d=\$1/\${2##*/}
mkdir -p "\$d" && pigz -dc "\$2" | tar -x -C "\$d"
EOF
chmod +x "$work/bin/"*

docker_sock=$work/docker/docker.sock # daemon files on the host fs, its data root on $S
cat >"$work/bin/docker-reset" <<EOF
#!/bin/sh
# Stops the previous dockerd, empties its data root and starts a fresh one.
set -e
d=$work/docker
for f in \$d/docker.pid \$d/exec/containerd/containerd.pid; do
  [ -s \$f ] || continue
  p=\$(cat \$f)
  kill -TERM \$p 2>/dev/null || continue
  i=0; while kill -0 \$p 2>/dev/null && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
  kill -KILL \$p 2>/dev/null || true
done
rm -rf \$d/exec
$work/bin/reset-dir $S/docker
mkdir -p \$d
echo '{}' >\$d/daemon.json
setsid dockerd --config-file \$d/daemon.json --data-root $S/docker --exec-root \$d/exec \\
  -H unix://$docker_sock --pidfile \$d/docker.pid --bridge=none --iptables=false \\
  --ip-masq=false --userland-proxy=false --storage-driver overlay2 --log-level warn \\
  >\$d/dockerd.log 2>&1 </dev/null &
i=0
until docker -H unix://$docker_sock version >/dev/null 2>&1; do
  i=\$((i + 1)); [ \$i -lt 300 ] || { cat \$d/dockerd.log >&2; exit 1; }
  sleep 0.1
done
sleep 1 # let its startup work settle
EOF
chmod +x "$work/bin/docker-reset"

# tool -> what the command does, for the table.
declare -A what cmd reset
what[berth]="pull: download, verify, unpack (fsynced snapshots)"
cmd[berth]="$BERTH --root $S/berth pull -q $ref"
reset[berth]="$work/bin/reset-dir $S/berth"
if [ -n "${BERTH_BASE:-}" ]; then
  what[berth-base]="the same pull, with the baseline build $BERTH_BASE"
  cmd[berth-base]="$BERTH_BASE --root $S/berth-base pull -q $ref"
  reset[berth-base]="$work/bin/reset-dir $S/berth-base"
fi
what[podman]="pull: download, verify, unpack into overlay storage"
cmd[podman]="$work/bin/podman-env $work/podman $S/podman podman --root $S/podman/storage --runroot $S/podman/run --tmpdir $S/podman/tmp --storage-driver overlay --cgroup-manager=cgroupfs --events-backend=file pull -q --tls-verify=false $ref"
reset[podman]="$work/bin/reset-dir $S/podman $S/podman/tmp"
what[skopeo-oci]="copy to an OCI layout: download + verify, **no unpack**"
cmd[skopeo-oci]="skopeo copy -q --insecure-policy --src-tls-verify=false docker://$ref oci:$S/skopeo-oci:latest"
reset[skopeo-oci]="$work/bin/reset-dir $S/skopeo-oci"
what[skopeo-storage]="copy to containers-storage (overlay): download, verify, unpack"
cmd[skopeo-storage]="$work/bin/podman-env $work/skopeo-storage $S/skopeo-storage skopeo copy -q --insecure-policy --src-tls-verify=false docker://$ref 'containers-storage:[overlay@$S/skopeo-storage/storage+$S/skopeo-storage/run]$ref'"
reset[skopeo-storage]="$work/bin/reset-dir $S/skopeo-storage $S/skopeo-storage/tmp"
what[docker]="pull through a fresh private dockerd (overlay2): download, verify, unpack"
cmd[docker]="docker -H unix://$docker_sock pull -q $ref"
reset[docker]="$work/bin/docker-reset"
what[gzip]="baseline: \`gzip -dc\` of every layer blob, \`xargs -P $(nproc)\`, to /dev/null"
cmd[gzip]="sh -c 'xargs -P $(nproc) -n 1 gzip -dc <$layers_list >/dev/null'"
reset[gzip]="sync"
what[pigz]="baseline: \`pigz -dc\` of every layer blob, \`xargs -P $(nproc)\`, to /dev/null"
cmd[pigz]="sh -c 'xargs -P $(nproc) -n 1 pigz -dc <$layers_list >/dev/null'"
reset[pigz]="sync"
what[untar]="reference: \`pigz -dc \\| tar -x\` of every layer into its own dir, \`xargs -P $(nproc)\` (no verify, no fsync)"
cmd[untar]="sh -c 'xargs -P $(nproc) -n 1 $work/bin/untar-one $S/untar <$layers_list'"
reset[untar]="$work/bin/reset-dir $S/untar"
what[untar-sync]="reference: untar, then one \`sync -f\` (syncfs) of the store: unpacked files durable"
cmd[untar-sync]="sh -c 'xargs -P $(nproc) -n 1 $work/bin/untar-one $S/untar-sync <$layers_list && sync -f $S'"
reset[untar-sync]="$work/bin/reset-dir $S/untar-sync"
setup_containers_dir "$work/podman" "$S/podman"
setup_containers_dir "$work/skopeo-storage" "$S/skopeo-storage"

notes=()
note() { notes+=("$1"); log "$1"; }

# Files the tool left as an unpacked image: regular files under its
# per-layer directories (whiteouts excluded), to check all unpack the same.
unpacked_files() {
  case $1 in
    berth | berth-base) find "$S/$1/snapshots" -type f ! -name '.wh.*' 2>/dev/null | wc -l ;;
    podman | skopeo-storage) find "$S/$1/storage/overlay" -path '*/diff/*' -type f ! -name '.wh.*' 2>/dev/null | wc -l ;;
    docker) find "$S/docker/overlay2" -path '*/diff/*' -type f ! -name '.wh.*' 2>/dev/null | wc -l ;;
    untar | untar-sync) find "$S/$1" -type f ! -name '.wh.*' 2>/dev/null | wc -l ;;
    *) echo - ;;
  esac
}

# -------------------------------------------------------------- smoke
# One untimed run of each tool (also the warmup of binaries and caches);
# a tool that fails is not measured and its error goes into the notes.
ok=()
declare -A err files
for t in $TOOLS; do
  [ -n "${cmd[$t]:-}" ] || die "unknown tool $t (known: ${!cmd[*]})"
  need=$t
  case $t in skopeo-*) need=skopeo ;; gzip) need=gzip ;; untar*) need=pigz ;; berth) need=$BERTH ;; berth-base) need=$BERTH_BASE ;; esac
  if ! command -v "$need" >/dev/null; then
    err[$t]="$need not installed"
    [ "$t" != docker ] || err[$t]="dockerd not installed (apt-get install -y docker.io; no service is started here)"
    note "$t: ${err[$t]}; not measured."
    continue
  fi
  if [ "$t" = docker ] && ! command -v dockerd >/dev/null; then
    err[$t]="dockerd not installed (apt-get install -y docker.io; no service is started here)"
    note "$t: ${err[$t]}; not measured."
    continue
  fi
  out=
  if ! out=$(bash -c "${reset[$t]}" 2>&1); then
    err[$t]="setup failed: $(echo "$out" | tail -n 5 | tr '\n' ' ')"
    note "$t: ${err[$t]}; not measured."
    continue
  fi
  start=$(date +%s.%N)
  if out=$(bash -c "${cmd[$t]}" 2>&1 </dev/null); then
    end=$(date +%s.%N)
    ok+=("$t")
    files[$t]=$(unpacked_files "$t")
    log "$t: smoke run ok in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s, unpacked regular files: ${files[$t]}"
  else
    rc=$?
    err[$t]="exit $rc: $(echo "$out" | tail -n 5 | tr '\n' ' ' | sed 's/ *$//')"
    note "$t failed its smoke run, not measured: \`${err[$t]}\`"
  fi
done
[ ${#ok[@]} -gt 0 ] || die "no tool could pull the image"
# berth's pull must have produced the image.
if [[ " ${ok[*]} " == *" berth "* ]]; then
  "$BERTH" --root "$S/berth" images | grep -q "127.0.0.1:$PORT/${NAME%:*}" || die "berth pull did not record the image"
fi

# ------------------------------------------------------------ hyperfine
# The machine is shared: rather than all runs of one tool, then all of the
# next, run RUNS rounds of one run per tool (hyperfine --runs 1), the order
# rotated each round, so load from others spreads over all tools alike. The
# rounds' JSON is merged into one hyperfine-style file (every timing kept).
stamp=$(date -u +%Y%m%dT%H%M%SZ)
load=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$here/results"
json=$here/results/image-pull-$stamp.json
interleaved_hyperfine ok cmd reset "$RUNS" 1 0 "$json" || die "hyperfine failed"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# -------------------------------------------------------------- results
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
ver() { "$@" 2>&1 | head -n 1 || true; }
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$repo" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]; then rev="$rev + uncommitted changes"; fi
# A binary the script did not build may be older than HEAD.
[ -z "${NO_BUILD:-}" ] || rev="unknown: an existing binary from $(date -u -r "$BERTH" +"%Y-%m-%d %H:%M UTC"); HEAD is $rev"
med() { jq -r --arg t "$1" '.results[] | select(.command == $t) | .median' "$json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }

{
  [ -s "$RESULTS" ] || printf '# berth benchmark results\n\nAppended by the scripts in bench/ (see bench/README.md).\n'
  echo
  echo "## image-pull — $(date -u +'%Y-%m-%d %H:%M:%S UTC')"
  echo
  echo "Cold pull of one image from a local registry (Debian's docker-registry on"
  echo "127.0.0.1, plain HTTP): $img_layers gzip layers, $(mib "$img_c") MiB compressed (the transfer),"
  echo "$(mib "$img_u") MiB uncompressed tar, $img_files regular files, generated from this host's"
  echo "/usr (libraries, executables, python, locales/man pages, docs, a JVM, a Go"
  echo "toolchain, headers), 24 MiB of random data and a last layer with whiteouts;"
  echo "manifest \`$img_digest\`."
  echo "$RUNS runs per tool in $RUNS interleaved rounds (\`hyperfine -N --runs 1\` per round, every tool once, order"
  echo "rotated and reversed every other round, a pause after each tool). \"Cold\": before every run"
  echo "(untimed) the tool's store is removed (unmounted first) and \`sync\` is run; dockerd is"
  echo "restarted on an empty data root. The registry's blobs and the baselines' blobs are in the page cache."
  echo
  echo "- Machine: $(nproc) CPUs, $cpu, $mem RAM, kernel $(uname -r), stores on $store_desc"
  echo "- Load average when the runs started: $load; when they ended: $load_end"
  echo "- berth: $(ver "$BERTH" --version) (release build, ${NO_BUILD:+NO_BUILD: }commit $rev)"
  echo "- podman: $(ver podman --version | sed 's/podman version //'); skopeo: $(ver skopeo --version | sed 's/skopeo version //')"
  if command -v dockerd >/dev/null; then
    echo "- docker: dockerd $(dockerd --version | sed 's/Docker version //'), containerd $(containerd --version 2>/dev/null | awk '{ print $3 }'), CLI $(docker --version | sed 's/Docker version //; s/,.*//')"
  fi
  echo "- registry: docker-registry $(ver docker-registry --version | awk '{ print $3 }')"
  echo "- gzip $(ver gzip --version | awk '{ print $2 }'), pigz $(ver pigz --version | awk '{ print $2 }'), GNU tar $(ver tar --version | awk '{ print $4 }'), hyperfine $(ver hyperfine --version | sed 's/hyperfine //')"
  echo
  echo "| tool | what it does | mean ± σ (s) | median (s) | min (s) | max (s) | median vs berth | files unpacked |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for t in "${ok[@]}"; do
    jq -r --arg t "$t" --arg what "${what[$t]}" --arg files "${files[$t]}" '
      def f2: (. * 100 | round) as $n
        | "\(($n / 100) | floor).\($n % 100 | tostring | if length < 2 then "0" + . else . end)";
      (.results | map(select(.command == "berth")) | first | .median) as $b
      | .results[] | select(.command == $t)
      | [ .command, $what,
          "\(.mean | f2) ± \(.stddev | f2)",
          (.median | f2), (.min | f2), (.max | f2),
          (if $b then (.median / $b | f2) + "×" else "–" end),
          $files ]
      | "| " + join(" | ") + " |"' "$json"
  done
  for t in $TOOLS; do
    [ -z "${err[$t]:-}" ] || echo "| $t | not measured: see notes | | | | | | |"
  done
  echo
  echo "Raw data: [results/${json##*/}](results/${json##*/})"
  b=$(med berth)
  if [ -n "$b" ]; then
    echo
    echo "Targets (medians):"
    p=$(med podman)
    if [ -n "$p" ]; then
      r=$(ratio "$p" "$b")
      if awk -v r="$r" 'BEGIN { exit !(r >= 2) }'; then v="**met**"; else v="**not met**"; fi
      echo "- berth at least 2× faster than podman: podman/berth = ${r}× — $v"
    fi
    floor= floor_t=
    for t in pigz gzip; do
      m=$(med "$t")
      [ -n "$m" ] || continue
      if [ -z "$floor" ] || awk -v a="$m" -v b="$floor" 'BEGIN { exit !(a < b) }'; then floor=$m floor_t=$t; fi
    done
    if [ -n "$floor" ]; then
      r=$(ratio "$b" "$floor")
      if awk -v r="$r" 'BEGIN { exit !(r <= 1.3) }'; then v="**met**"; else v="**not met**"; fi
      echo "- berth within 1.3× of plain parallel decompression (the faster baseline, $floor_t): berth/$floor_t = ${r}× — $v"
    fi
    for t in untar untar-sync; do
      m=$(med "$t")
      [ -z "$m" ] || echo "- for reference, berth/$t = $(ratio "$b" "$m")× (${what[$t]%%:*} $t: $(awk -v m="$m" 'BEGIN { printf "%.2f", m }') s)"
    done
  fi
  if [ ${#notes[@]} -gt 0 ]; then
    echo
    echo "Notes:"
    for n in "${notes[@]}"; do echo "- $n"; done
  fi
} >>"$RESULTS"

log "results appended to $RESULTS; raw JSON in $json"

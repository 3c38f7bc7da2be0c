#!/usr/bin/env bash
# Build the end-to-end test guest once and cache it: a Debian bookworm root file system with full
# systemd and cgroup v2, built from Debian's own packages (no image from elsewhere), plus the
# kernel and initramfs to boot it with `qemu-system-x86_64 -kernel`. See tests/e2e/README.md.
#
#   bash tests/e2e/build_image.sh           build unless a valid cache is there
#   bash tests/e2e/build_image.sh --force   build anew
#
# Run as root (debootstrap, chroot, mount /proc). Cache: ${GUARDIAN_E2E_CACHE:-/var/cache/guardian-e2e}
#   disk.img    raw ext4 root file system (runs use a qcow2 overlay over it, never write it)
#   vmlinuz     the guest kernel
#   initrd.img  its initramfs (MODULES=list: virtio_pci virtio_blk ext4 9p 9pnet_virtio)
#   stamp       written last: this script's sha256, build date and time, kernel, package list
# The cache is valid when all four are there and the stamp names this script's sha256: any change
# to this file (packages, the baked-in runner) invalidates it, and tests/e2e/vm.py says so.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SELF="$HERE/$(basename "$0")"
CACHE=${GUARDIAN_E2E_CACHE:-/var/cache/guardian-e2e}
MIRROR=${GUARDIAN_E2E_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DISK_SIZE=3G

# What the scenarios and the peer benchmark need in the guest (python3-prometheus-client: the
# [metrics] endpoint, which the metrics scenario scrapes). python3-wheel: setuptools 66
# (bookworm) builds wheels through it, and the offline install (GUARDIAN_OFFLINE=1
# scripts/install.sh) uses --no-build-isolation, so it must be there. systemd-oomd is its own
# package in bookworm. libre2-9: the library the Debian package's RE2 binding links to (the
# deb scenarios install that package offline, with dpkg -i).
PACKAGES=(
    systemd systemd-sysv udev dbus kmod procps util-linux initramfs-tools
    python3 python3-venv python3-pip python3-setuptools python3-wheel
    python3-psutil python3-pluggy python3-systemd python3-prometheus-client
    earlyoom systemd-oomd nohang stress-ng
    libre2-9
)
# What install.sh's guardian needs that Debian does not package: google-re2 (linear-time rule
# matching; the Debian package has its own binding to libre2 instead). The wheel is fetched on
# the host for the guest's Python and installed into the guest's system site-packages, where
# the offline install (install.sh, GUARDIAN_OFFLINE=1) finds it, as an air-gapped host would be
# given it.
WHEELS=(google-re2)
KERNEL_PACKAGE=linux-image-amd64
INITRAMFS_MODULES=(virtio_pci virtio_blk ext4 9p 9pnet_virtio)
# Installed but not started at boot: each scenario (or the benchmark) starts the one it wants.
PEER_UNITS=(earlyoom.service nohang.service nohang-desktop.service systemd-oomd.service systemd-oomd.socket)
# Timers and jobs that would only add noise (CPU, memory, journal lines) to a measurement.
MASK_UNITS=(
    getty.target serial-getty@ttyS0.service getty@tty1.service
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
    e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer
)

FORCE=0
case "${1:-}" in
    --force) FORCE=1 ;;
    "") ;;
    *)
        echo "usage: $0 [--force]" >&2
        exit 2
        ;;
esac

log() { echo "build_image: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounting /proc need it)"

RECIPE=$(sha256sum "$SELF" | cut -d' ' -f1)
START=$(date +%s)

cache_valid() {
    [ -s "$CACHE/disk.img" ] && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ] &&
        [ -s "$CACHE/stamp" ] && grep -qx "recipe_sha256=$RECIPE" "$CACHE/stamp"
}

# Host tools: install the missing ones from Debian.
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v flock >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    log "installing host tools: ${need[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
timeout 3600 flock 9 || die "another build holds $CACHE/.lock"

if [ "$FORCE" = 0 ] && cache_valid; then
    log "cache is valid, nothing to do: $CACHE ($(grep '^built=' "$CACHE/stamp"))"
    exit 0
fi

BUILD=$(mktemp -d "$CACHE/build.XXXXXX")
ROOTFS="$BUILD/rootfs"

# Unmount everything under the root file system, deepest first (debootstrap mounts /proc and
# /sys itself and may leave them behind when it fails).
umount_rootfs() {
    local m
    [ -d "$ROOTFS" ] || return 0
    for m in $(findmnt -rn -o TARGET | grep -F "$ROOTFS" | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}
cleanup() {
    umount_rootfs
    rm -rf --one-file-system "$BUILD"
}
trap cleanup EXIT

in_chroot() { timeout "$1" chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "${@:2}"; }

log "debootstrap --variant=minbase $SUITE from $MIRROR ($(date -u +%H:%M:%S))"
timeout 1800 debootstrap --variant=minbase --include="$(
    IFS=,
    echo "${PACKAGES[*]}"
)" "$SUITE" "$ROOTFS" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 || {
    tail -n 30 "$BUILD/debootstrap.log" >&2
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
}
umount_rootfs

# initramfs-tools: MODULES=dep needs /sys, which a chroot does not have; list the modules instead.
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOTFS/etc/initramfs-tools/initramfs.conf"
printf '%s\n' "${INITRAMFS_MODULES[@]}" >>"$ROOTFS/etc/initramfs-tools/modules"
# No daemon may start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"

log "installing $KERNEL_PACKAGE in the chroot ($(date -u +%H:%M:%S))"
mount -t proc proc "$ROOTFS/proc"
in_chroot 600 apt-get update -qq >"$BUILD/apt.log" 2>&1 || {
    tail -n 30 "$BUILD/apt.log" >&2
    die "apt-get update in the chroot failed"
}
in_chroot 1200 apt-get install -y -q --no-install-recommends "$KERNEL_PACKAGE" >>"$BUILD/apt.log" 2>&1 || {
    tail -n 30 "$BUILD/apt.log" >&2
    die "installing $KERNEL_PACKAGE failed"
}
KVER=$(basename "$(ls -d "$ROOTFS"/lib/modules/* | sort -V | tail -n 1)")
if [ ! -s "$ROOTFS/boot/initrd.img-$KVER" ]; then
    in_chroot 600 update-initramfs -c -k "$KVER" >>"$BUILD/apt.log" 2>&1 || die "update-initramfs failed"
fi
INITRD_FILES=$(in_chroot 120 lsinitramfs "/boot/initrd.img-$KVER")
for mod in "${INITRAMFS_MODULES[@]}"; do
    # built into the kernel (=y) is as good as in the initramfs
    if ! grep -q "/$mod\.ko" <<<"$INITRD_FILES" &&
        ! grep -qw "${mod//-/_}" "$ROOTFS/lib/modules/$KVER/modules.builtin"; then
        die "module $mod is not in the initramfs"
    fi
done
in_chroot 300 apt-get clean

log "installing ${WHEELS[*]} from wheels ($(date -u +%H:%M:%S))"
GUEST_PY=$(in_chroot 60 python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
HOST_PY=$HERE/../../.venv/bin/python
[ -x "$HOST_PY" ] || HOST_PY=python3
WHEEL_DIR=/var/cache/guardian-e2e-wheels # inside the chroot
mkdir -p "$ROOTFS$WHEEL_DIR"
timeout 600 "$HOST_PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
    --python-version "$GUEST_PY" --implementation cp --platform manylinux_2_28_x86_64 \
    -d "$ROOTFS$WHEEL_DIR" "${WHEELS[@]}" >"$BUILD/wheels.log" 2>&1 || {
    tail -n 20 "$BUILD/wheels.log" >&2
    die "downloading ${WHEELS[*]} failed"
}
# the glob is the chroot's, expanded by its own shell
in_chroot 300 sh -c "python3 -m pip install -q --no-index --no-deps --break-system-packages $WHEEL_DIR/*.whl" \
    >>"$BUILD/wheels.log" 2>&1 || {
    tail -n 20 "$BUILD/wheels.log" >&2
    die "installing ${WHEELS[*]} in the chroot failed"
}
WHEEL_LIST=$(cd "$ROOTFS$WHEEL_DIR" && ls)
rm -rf "${ROOTFS:?}$WHEEL_DIR"
umount "$ROOTFS/proc"

log "configuring the guest"
rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/resolv.conf"
rm -rf "$ROOTFS"/var/lib/apt/lists/*
echo guardian-e2e >"$ROOTFS/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tguardian-e2e\n' >"$ROOTFS/etc/hosts"
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t0\n' >"$ROOTFS/etc/fstab"
# A machine id of its own: without one, every boot is a "first boot" and systemd applies the
# presets, which would enable the peer daemons again.
tr -d - </proc/sys/kernel/random/uuid >"$ROOTFS/etc/machine-id"
passwd -R "$ROOTFS" -d root >/dev/null
printf '9p\n9pnet_virtio\n' >"$ROOTFS/etc/modules-load.d/guardian-e2e.conf"
# The journal lives in /run (one boot per overlay anyway) and is copied out by the runner.
mkdir -p "$ROOTFS/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=256M\n' >"$ROOTFS/etc/systemd/journald.conf.d/guardian-e2e.conf"
mkdir -p "$ROOTFS/mnt/e2e"

# The runner: mount the host's 9p share (tag e2e), run its run-in-guest.sh under a timeout,
# copy the journal (JSON, whole boot) and dmesg into its results/, power off. Whatever happens,
# it powers off, so a host-side run ends by itself.
cat >"$ROOTFS/usr/local/sbin/guardian-e2e-run" <<'EOF'
#!/bin/bash
# guardian-e2e-run: baked into the e2e guest by tests/e2e/build_image.sh; started once per boot
# by guardian-e2e.service.
set -u
SHARE=/mnt/e2e
R=$SHARE/results
say() { echo "guardian-e2e: $*" >/dev/console; }
poweroff_now() {
    sync
    say "powering off"
    systemctl poweroff --no-block
    exit 0
}
if ! mountpoint -q "$SHARE" && ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 e2e "$SHARE"; then
    say "cannot mount the 9p share (tag e2e)"
    poweroff_now
fi
mkdir -p "$R"
T=$(cat "$SHARE/guest_timeout_s" 2>/dev/null || echo 600)
{
    echo "kernel: $(uname -r)"
    echo "cmdline: $(cat /proc/cmdline)"
    echo "memtotal: $(grep MemTotal /proc/meminfo)"
    echo "cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>&1)"
    echo "system.slice subtree_control: $(cat /sys/fs/cgroup/system.slice/cgroup.subtree_control 2>&1)"
    echo "psi memory: $(head -n 1 /proc/pressure/memory 2>&1)"
    echo "systemd: $(systemctl --version | head -n 1)"
} >"$R/guest-info.txt"
say "running the scenario (guest timeout ${T}s)"
timeout --kill-after=10 "$T" /bin/bash "$SHARE/run-in-guest.sh" >"$R/scenario.log" 2>&1 </dev/null &
child=$!
tail -n +1 -f --pid="$child" "$R/scenario.log" >/dev/console 2>&1 &
wait "$child"
rc=$?
echo "$rc" >"$R/exit_status"
say "scenario exit status $rc; collecting the journal and dmesg"
journalctl --sync 2>/dev/null
journalctl -b -o json --no-pager >"$R/journal.json" 2>"$R/journal.err"
dmesg >"$R/dmesg.txt"
poweroff_now
EOF
chmod 0755 "$ROOTFS/usr/local/sbin/guardian-e2e-run"

cat >"$ROOTFS/etc/systemd/system/guardian-e2e.service" <<'EOF'
# Baked into the e2e guest by tests/e2e/build_image.sh.
[Unit]
Description=guardian end-to-end scenario runner (9p share e2e)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/guardian-e2e-run
TimeoutStartSec=infinity
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF

in_chroot 60 systemctl set-default multi-user.target
in_chroot 60 systemctl enable guardian-e2e.service
for unit in "${PEER_UNITS[@]}"; do
    in_chroot 60 systemctl disable "$unit" >/dev/null 2>&1 || true
done
in_chroot 60 systemctl mask "${MASK_UNITS[@]}"
for unit in "${PEER_UNITS[@]}"; do
    if in_chroot 60 systemctl is-enabled "$unit" >/dev/null 2>&1; then
        die "$unit is still enabled"
    fi
done

log "making the disk ($(date -u +%H:%M:%S))"
cp "$ROOTFS/boot/vmlinuz-$KVER" "$BUILD/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KVER" "$BUILD/initrd.img"
PSI_CONFIG=$(grep -E '^CONFIG_PSI(_DEFAULT_DISABLED)?=' "$ROOTFS/boot/config-$KVER" | tr '\n' ' ')
PKGLIST=$(in_chroot 60 dpkg-query -W -f='${Package} ${Version}\n')
timeout 600 mke2fs -q -t ext4 -L guardian-e2e -d "$ROOTFS" "$BUILD/disk.img" "$DISK_SIZE" || die "mke2fs failed"

rm -f "$CACHE/stamp"
mv -f "$BUILD/disk.img" "$BUILD/vmlinuz" "$BUILD/initrd.img" "$CACHE/"
END=$(date +%s)
{
    echo "recipe_sha256=$RECIPE"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_seconds=$((END - START))"
    echo "suite=$SUITE"
    echo "mirror=$MIRROR"
    echo "kernel=$KVER"
    echo "kernel_psi_config=$PSI_CONFIG"
    echo "disk_size=$DISK_SIZE"
    echo "wheels: $WHEEL_LIST"
    echo "packages:"
    echo "$PKGLIST"
} >"$CACHE/stamp.new"
mv -f "$CACHE/stamp.new" "$CACHE/stamp"
log "built $CACHE in $((END - START)) s (kernel $KVER, $(echo "$PKGLIST" | wc -l) packages)"

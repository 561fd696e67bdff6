# Sourced by benches that run podman (runtime.sh, jobs.sh). crun, also under podman, refuses
# this host's hybrid cgroup layout, and podman as root writes caches under /var/lib and /run:
# the benches run podman in a private mount namespace in which /sys/fs/cgroup/unified is
# unmounted and tmpfs hides those directories (the host is untouched). Needs WORK exported;
# podman's own files go to $WORK/pm.

# The shell commands that prepare such a namespace (for `unshare --mount ... sh -euc`).
PODMAN_NS_SETUP='for d in /var/lib /run/crun /run/libpod /run/containers; do
    if [ -d "$d" ]; then mount -t tmpfs dm-bench "$d"; fi
  done
  ! mountpoint -q /sys/fs/cgroup/unified || umount /sys/fs/cgroup/unified
  export HOME="$WORK/pm" XDG_CONFIG_HOME="$WORK/pm/xdg" REGISTRY_AUTH_FILE="$WORK/pm/auth.json"'

# podman (cgroupfs manager) leaves libpod_parent/conmon in every v1 hierarchy: removed by
# podman_cgroups_cleanup unless it was there before.
PODMAN_CGROUP_WAS_THERE=$([ -d /sys/fs/cgroup/memory/libpod_parent ] && echo 1 || echo 0)
podman_cgroups_cleanup() {
  [ "$PODMAN_CGROUP_WAS_THERE" = 0 ] || return 0
  for h in /sys/fs/cgroup/*/; do
    [ -d "${h}libpod_parent" ] && rmdir "${h}libpod_parent/conmon" "${h}libpod_parent" 2>/dev/null
  done
  return 0
}

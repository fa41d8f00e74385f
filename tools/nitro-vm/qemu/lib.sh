# Shared by boot-test.sh and auction-test.sh (sourced, after `cd` to the checkout and with
# say/die defined): the QEMU parts, and ending what a harness left running.

# Sets qemu, qemu_data, kernel and vhost from tools/nitro-vm/qemu/build.sh (which builds or finds
# them in its cache).
nitro_qemu_parts() {
  qemu="" qemu_data="" kernel="" vhost=""
  local name value f
  while IFS='=' read -r name value; do
    case $name in
      QEMU) qemu=$value ;;
      QEMU_DATA) qemu_data=$value ;;
      KERNEL) kernel=$value ;;
      VHOST_DEVICE_VSOCK) vhost=$value ;;
    esac
  done < <(tools/nitro-vm/qemu/build.sh)
  for f in "$qemu" "$kernel" "$vhost"; do
    if [ -z "$f" ] || [ ! -f "$f" ]; then die "build.sh gave no usable paths"; fi
  done
}

# The harness binaries end QEMU and the backend themselves; should one have died first, end
# them here, by the PIDs written in the given directories, and only while those PIDs still run
# the programs started (nitro_qemu_parts' $qemu and $vhost).
nitro_qemu_end_leftovers() {
  local d f exe pid
  for d in "$@"; do
    for f in "$d/qemu.pid:$qemu" "$d/vhost-device-vsock.pid:$vhost"; do
      [ -f "${f%%:*}" ] || continue
      exe=${f#*:}
      pid=$(cat "${f%%:*}")
      if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]; then
        say "ending leftover pid $pid ($exe)"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  done
}

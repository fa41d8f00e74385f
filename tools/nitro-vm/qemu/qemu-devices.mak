# The only device (machine) built into tools/nitro-vm/qemu's qemu-system-x86_64; it selects what it
# needs (microvm, virtio-mmio, vhost-user-vsock, the NSM device).
CONFIG_NITRO_ENCLAVE=y

#!/bin/sh
# PID 1 of the VM's initramfs: load the few drivers the root needs, mount the image's root
# read-only under a tmpfs overlay, set up what a container runtime expects of a booted
# system (mounts, network, ssh keys), then hand over to the image's own init.
/bin/busybox --install -s /bin
export PATH=/bin
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys

rescue() {
    echo "cimages-initramfs: $*; emergency shell (exit reboots)" > /dev/console
    exec setsid cttyhack sh
}

for module in $(cat /modules.order); do insmod "/lib/modules/$module" || rescue "insmod $module failed"; done

INIT=/sbin/init
for word in $(cat /proc/cmdline); do
    case "$word" in
        cimages.init=*) INIT="$(echo "${word#*=}" | base64 -d)" ;;
        cimages.ssh_key=*) SSH_KEY="${word#*=}" ;;
        cimages.host_key=*) HOST_KEY="${word#*=}" ;;
        cimages.shell=1) RESCUE=1 ;;
    esac
done

tries=0
until [ -b /dev/vda ]; do
    tries=$((tries + 1)); [ $tries -gt 500 ] && rescue "no root disk /dev/vda after 5 s"
    sleep 0.01
done
mkdir -p /lower /rw /newroot
mount -t ext4 -o ro,noload /dev/vda /lower || rescue "cannot mount /dev/vda"
mount -t tmpfs -o mode=0755 rw /rw && mkdir -p /rw/upper /rw/work
mount -t overlay root -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || rescue "cannot mount the overlay root"

R=/newroot
# Docker's overlay2 driver cannot stack on the overlay root: it gets its own tmpfs.
mkdir -p $R/var/lib/docker $R/run/sshd $R/root/.ssh $R/etc/ssh
mount -t tmpfs -o mode=0711 docker $R/var/lib/docker
for dir in dev proc sys; do mkdir -p $R/$dir; mount --move /$dir $R/$dir; done
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmp $R/tmp

# QEMU user-mode networking has fixed addresses, so no DHCP client is needed.
hostname cimages-vm
echo cimages-vm > $R/etc/hostname
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" > $R/etc/resolv.conf
printf '127.0.0.1 localhost\n127.0.1.1 cimages-vm\n' > $R/etc/hosts

if [ -n "$SSH_KEY" ]; then
    echo "$SSH_KEY" | base64 -d > $R/root/.ssh/authorized_keys
    chmod 700 $R/root/.ssh && chmod 600 $R/root/.ssh/authorized_keys
fi
if [ -n "$HOST_KEY" ]; then
    rm -f $R/etc/ssh/ssh_host_*
    echo "$HOST_KEY" | base64 -d > $R/etc/ssh/ssh_host_ed25519_key
    chmod 600 $R/etc/ssh/ssh_host_ed25519_key
fi

# Root logs in with a full PATH (Debian's sshd default lacks the sbin directories).
mkdir -p $R/etc/ssh/sshd_config.d
printf 'SetEnv PATH=%s\nPermitRootLogin prohibit-password\nUseDNS no\n' "$ROOT_PATH" \
    > $R/etc/ssh/sshd_config.d/cimages-vm.conf

[ -n "$RESCUE" ] && rescue "cimages.shell=1 on the kernel command line"
echo "cimages-initramfs: starting $INIT" > /dev/console
export PATH="$ROOT_PATH"
exec switch_root $R $INIT

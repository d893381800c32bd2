# sd_notify for s6 (spliced into the run script of a `readiness: sd-notify` service): socat
# receives the daemon's datagrams on NOTIFY_SOCKET, in the service directory, and
# /etc/s6/notify-record records each on a line of notify.log, which the check reads. The
# socket is 0666 so a service running as its own user can send; once READY=1 came, the
# check stops the listener (later messages, WATCHDOG=1 every few seconds for some daemons,
# would only grow the file).
# A listener left by a run that died before it was ready:
read -r pid < notify.pid 2>/dev/null && kill "$pid" 2>/dev/null
rm -f notify.sock notify.log
/usr/bin/socat -u UNIX-RECVFROM:notify.sock,fork,perm=0666 EXEC:/etc/s6/notify-record </dev/null >/dev/null 2>&1 &
echo $! > notify.pid
# socat binds in the background: the daemon must not start before it listens.
i=0
until [ -S notify.sock ]; do
    i=$((i + 1))
    [ $i -lt 500 ] || exit 111
    /bin/busybox sleep 0.01
done
export NOTIFY_SOCKET="$PWD/notify.sock"

#!/bin/busybox sh
# The entry point: init [STATE_DIR]. Prepares the state directory, starts stage 2 in the
# background, then becomes s6-svscan, which as PID 1 reaps every orphan.
bb=/bin/busybox
S6_STATE=${1:-/run/s6}
export S6_STATE
prepare() {
    cd / || return
    # A restarted container finds its previous state: start afresh. (A fresh one has none,
    # and under TCG every exec counts.)
    if [ -e "$S6_STATE" ]; then
        cd "$S6_STATE" &&
            $bb rm -rf scan services oneshots exitcode stopping stage2.pid svscan.pid &&
            cd / || return
    fi
    $bb mkdir -p "$S6_STATE/oneshots" &&
        $bb cp -a /etc/s6/scan /etc/s6/services "$S6_STATE/" &&
        echo $$ > "$S6_STATE/svscan.pid"
}
prepare || { echo "s6-init: cannot prepare the state directory $S6_STATE" >&2; exit 111; }
# s6-svscan finds s6-supervise through PATH; keep the caller's PATH, make sure of that one.
case ":${PATH:-}:" in
    *:/usr/bin:*) ;;
    *) PATH=${PATH:+$PATH:}/usr/bin; export PATH ;;
esac
$bb setsid /etc/s6/stage2 </dev/null &
echo $! > "$S6_STATE/stage2.pid"
exec /usr/bin/s6-svscan -- "$S6_STATE/scan"

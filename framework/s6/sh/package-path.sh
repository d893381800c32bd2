# The service's `path` packages (spliced into its run and log scripts): their programs come
# first, the caller's PATH stays (NixOS semantics). Where Debian's packages put programs:
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"${PATH:+:$PATH}"

#!/bin/sh
# Run a command in a fresh network namespace that holds only the loopback interface, so every
# service the tests start (Ray nodes, MLflow servers) binds to and talks over 127.0.0.1 and
# nothing else: Ray otherwise swaps 127.0.0.1 for the machine's routable address.
# Needs root or unprivileged user namespaces; without either it runs the command as it is, and
# the tests that need the namespace fail with a message saying so.
if [ "${MISTUDY_NETNS:-}" = "1" ]; then exec "$@"; fi
inner='ip link set lo up && MISTUDY_NETNS=1 exec "$@"'
if unshare --net true 2>/dev/null; then
  exec unshare --net sh -c "$inner" sh "$@"
elif unshare --user --map-root-user --net true 2>/dev/null; then
  exec unshare --user --map-root-user --net sh -c "$inner" sh "$@"
fi
echo "tests/netns.sh: cannot create a loopback-only network namespace; running without it" >&2
exec "$@"

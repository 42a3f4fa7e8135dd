#!/bin/sh
# The image's entrypoint. With no command (or only flags), it runs stage 5:
# nginx on port 80 in front of stage 4's workers, the app from $APP.
#
#   docker run -p 8080:80 course                        stage5-nginx --listen 0.0.0.0:80 ...
#   docker run -p 8080:80 -e APP=apps.lab:app course    ... with the lab app
#   docker run -p 8080:80 course --workers 4            ... with more flags for stage 5
#   docker run -it course bash                          any other command, as it is
#
# Every path ends in `exec`: the shell is replaced by the program, which
# becomes the container's process 1 and gets `docker stop`'s SIGTERM
# itself. Without exec, the shell would get it, and a shell running a
# command does not pass signals on: 10 s later, SIGKILL for everyone.
set -eu

# ANCHOR: stage5
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- stage5-nginx --listen "0.0.0.0:${PORT:-80}" --run-dir /run/course \
        --static /srv/static --workers "${WORKERS:-2}" ${APP:+"$APP"} "$@"
fi
# ANCHOR_END: stage5

# ANCHOR: drop_root
# Stage 5 does not drop root itself (run as root, it would run nginx's and
# stage 4's workers as root too): switch to the user `app` first, keeping
# only the right to listen on a port below 1024 (an "ambient" capability,
# inherited by nginx through exec). Docker lets any user listen on port 80
# in a container; podman does not, hence the capability.
if [ "$1" = stage5-nginx ] && [ "$(id -u)" = 0 ]; then
    # The log pipes belong to root, mode 600: nginx, as app, could not open
    # /dev/stdout for its access log. Give them to app.
    chown --dereference app "/proc/$$/fd/1" "/proc/$$/fd/2" 2>/dev/null || true
    exec setpriv --reuid app --regid app --init-groups \
        --inh-caps +net_bind_service --ambient-caps +net_bind_service -- "$@"
fi
# ANCHOR_END: drop_root
exec "$@"

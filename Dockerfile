# The course's servers in one image: nginx in front, stage 4's workers
# behind it, and stage 5 supervising both as the container's first process.
#
#   docker build -t course .
#   docker run --rm -p 8080:80 course                   # the hello app on http://localhost:8080/
#   docker run --rm -p 8080:80 -e APP=apps.lab:app course
#   docker build --target supervisord -t course-supervisord .   # the notes' way: supervisord
#
# Without Docker Hub (no `debian:trixie` to pull), scripts/container-base.sh
# makes the base images from Debian's archive first; see book/src/container.md.

# ANCHOR: build
# ---- 1. build: a compiler, Python's headers, the workspace; none of it ships.
FROM debian:trixie AS build
# Rust from trixie-backports: the workspace needs Rust 1.88 or later (it
# uses `if let ... && let ...` chains); trixie itself has 1.85.
RUN echo 'deb http://deb.debian.org/debian trixie-backports main' \
        >/etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t trixie-backports cargo rustc \
 && apt-get install -y --no-install-recommends \
        gcc libc6-dev python3-dev python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The app's Python packages, in a virtualenv the runtime stage copies (pip
# itself stays behind). First, so that a change in the code does not
# install them again. The default file lists none.
ARG REQUIREMENTS=container/requirements.txt
COPY ${REQUIREMENTS} /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && if grep -Eqv '^[[:space:]]*(#|$)' /tmp/requirements.txt; then \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt; \
    fi \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip

# Only the two servers the image runs (stage 5 runs stage 4's binary, found
# next to its own). Cargo's downloads and its target directory live in
# cache mounts: a rebuild compiles only what changed, and neither ends up
# in a layer. Cargo decides what changed by the files' times, so two
# checkouts on one machine must not share a target directory: give each
# its own with --build-arg TARGET_CACHE=... (the tests do).
ARG TARGET_CACHE=course-cargo-target
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=course-cargo-registry,target=/root/.cargo/registry \
    --mount=type=cache,id=${TARGET_CACHE},target=/src/target,sharing=locked \
    cargo build --release --locked -p stage4-uwsgi-socket -p stage5-nginx \
 && install -D --strip -t /out target/release/stage4-uwsgi-socket target/release/stage5-nginx
# ANCHOR_END: build

# ANCHOR: base
# ---- 2. base: what runs. The same Debian, so the same Python (3.13): the
# binaries load libpython3.13 by the path they were linked with.
FROM debian:trixie-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libpython3.13 nginx \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --user-group --home-dir /srv --no-create-home --shell /usr/sbin/nologin app \
 && install -d -o app -g app -m 0700 /run/course \
 && install -d -o app -g www-data -m 2750 /run/uwsgi
# /run/course: stage 5's run directory (nginx.conf, the socket), private to app.
# /run/uwsgi:  the socket nginx and stage 4 share when they are two programs
#              (supervisord) or two containers (compose). The setgid bit gives
#              the socket the directory's group, www-data: with
#              --chmod-socket 660, nginx's workers may connect, nobody else.

COPY --from=build /out/ /usr/local/bin/
COPY --from=build /opt/venv /opt/venv
COPY apps /srv/apps
COPY stage5-nginx/static /srv/static
COPY container/nginx.conf container/supervisord.ini /etc/course/
COPY container/entrypoint.sh /usr/local/bin/course-entrypoint

# The app's virtualenv (stage 4 honours VIRTUAL_ENV); print() reaches the
# log at once, not when a buffer fills.
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /srv
EXPOSE 80
ENTRYPOINT ["course-entrypoint"]
# ANCHOR_END: base

# ANCHOR: supervisord
# ---- 3. the notes' way: supervisord runs nginx and stage 4 (--target supervisord).
FROM base AS supervisord
RUN apt-get update \
 && apt-get install -y --no-install-recommends supervisor \
 && rm -rf /var/lib/apt/lists/*
CMD ["supervisord", "-c", "/etc/course/supervisord.ini"]
# ANCHOR_END: supervisord

# ANCHOR: course
# ---- 4. the default image: stage 5 as the first process (see entrypoint.sh).
FROM base AS course
# ANCHOR_END: course

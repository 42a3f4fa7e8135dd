"""The WSGI entry point every server loads: `mysite.wsgi:application`.

    cargo run -p stage3-prefork -- mysite.wsgi:application --pythonpath apps/django_site

It also brings the database up to date before the first request (see
migrate_if_needed), so a clean checkout serves pages with nothing to set up;
DJANGO_AUTO_MIGRATE=0 leaves that to `python3 manage.py migrate`.
"""

import fcntl
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()


# ANCHOR: migrate
def migrate_if_needed():
    """Applies the migrations the database lacks, as `manage.py migrate` does.

    Every worker process imports this module (unless the server preloads
    it), all at the same moment: a file lock lets one migrate while the
    others wait, then find nothing left to do.
    """
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    db = settings.DATABASES["default"]["NAME"]
    with open(f"{db}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            call_command("migrate", interactive=False, verbosity=0)
    connection.close()  # not inherited by forked workers
# ANCHOR_END: migrate


if os.environ.get("DJANGO_AUTO_MIGRATE", "1") == "1":
    migrate_if_needed()

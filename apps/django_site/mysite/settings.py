"""Settings of the course's Django site.

What differs from one deployment to the next is read from the environment,
as production settings do (twelve-factor style); everything else is fixed here.

    DJANGO_DEBUG          1 for Django's debug pages (default 0: production)
    DJANGO_ALLOWED_HOSTS  comma-separated host names (default: localhost, 127.0.0.1, ::1)
    DJANGO_DATA_DIR       where the SQLite database and uploads live
                          (default: a directory in the system's temporary directory,
                          so a clean checkout runs with nothing to set up)
    DJANGO_DB_PATH        the SQLite file (default: DATA_DIR/db.sqlite3)
    DJANGO_STATIC_ROOT    where `manage.py collectstatic` copies static files,
                          for nginx to serve (default: DATA_DIR/static)
    DJANGO_STATIC_URL     the URL they are served at (default: /static/)
    DJANGO_MEDIA_ROOT     uploaded files (default: DATA_DIR/media), served at /media/
    DJANGO_SECRET_KEY     signs sessions and CSRF tokens (default: a fixed
                          development key: set a real one in production)
    DJANGO_AUTO_MIGRATE   0: mysite/wsgi.py does not migrate the database at start-up
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


# ANCHOR: env
def env(name, default):
    return os.environ.get(name, default)


DATA_DIR = Path(env("DJANGO_DATA_DIR", Path(tempfile.gettempdir()) / "wsgi-course-django"))

SECRET_KEY = env("DJANGO_SECRET_KEY", "django-insecure-course-only-never-use-in-production")
DEBUG = env("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = [h for h in env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
# ANCHOR_END: env

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": Path(env("DJANGO_DB_PATH", DATA_DIR / "db.sqlite3")),
        # Several worker processes write to one file: wait for the lock
        # rather than fail at once with "database is locked".
        "OPTIONS": {"timeout": 20},
    }
}

# The database's directory, made if missing: a clean checkout needs no set-up.
DATABASES["default"]["NAME"].parent.mkdir(parents=True, exist_ok=True)

AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ANCHOR: static
# Static files: the apps' own (notes/static/, the admin's) are copied by
# `manage.py collectstatic` into STATIC_ROOT, which nginx serves at
# STATIC_URL. Django itself serves none of them in production.
STATIC_URL = env("DJANGO_STATIC_URL", "/static/")
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", DATA_DIR / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("DJANGO_MEDIA_ROOT", DATA_DIR / "media"))
# ANCHOR_END: static

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

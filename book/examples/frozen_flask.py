"""The Flask app of apps/flask_app.py, with its objects frozen after import.

    cargo run -p stage3-prefork -- --wsgi-file book/examples/frozen_flask.py -w 4 --preload

gc.freeze() moves every object tracked by the garbage collector into a
permanent generation that collections ignore, so the collector stops
writing to (and copying) the pages the workers share with the master.
"""

import gc

from apps.flask_app import app

gc.freeze()

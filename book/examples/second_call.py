"""start_response may be called a second time, but only to report an error.

    /                  the error is reported the PEP 3333 way (exc_info): 503
    /forgot-exc-info   the second call has no exc_info: a bug, so the server answers 500
"""

import sys


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ConnectionError("the database is down")
    except ConnectionError:
        headers = [("Content-Type", "text/plain")]
        if environ["PATH_INFO"] == "/forgot-exc-info":
            start_response("503 Service Unavailable", headers)
        else:
            start_response("503 Service Unavailable", headers, sys.exc_info())
        return [b"try again later\n"]

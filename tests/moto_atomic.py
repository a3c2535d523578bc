"""moto_server with DynamoDB's write isolation: each DynamoDB request is handled whole
before the next one starts.

moto applies a conditional write or a transaction as read, check, write with no lock, so
two concurrent conditional writes to one item can both succeed, which DynamoDB never
allows. The tests that race copies of one delivery against each other (the deliver
function's chaos suite) would then see double sends that no deployment can produce. SQS
requests, long polls among them, are still served side by side.

Usage: python tests/moto_atomic.py -H 127.0.0.1 -p PORT
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def serialize_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            # The body is produced inside the lock: the write happens while it is built.
            return list(app(environ, start_response))

    return wrapped


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialize_dynamodb(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()

"""End to end with the real Lambda binaries.

The api, ingest and deliver binaries (the debug build of the test run) each poll a
`cargo lambda watch --only-lambda-apis` (the Lambda runtime API emulator), against
DynamoDB and SQS served by moto. A tenant and an endpoint are made
through the api function, events are published through the ingest function and written
straight to the queue, and a driver pumps the queue into the deliver function the way the
SQS event source mapping does: receive, invoke with an SQS event, delete only what the
function did not report in batchItemFailures. A local receiver checks each delivery with
the official standardwebhooks library (`v1`) and with `cryptography` and the endpoint's
public key from the api function (`v1a`). Then: ten events of 200 KiB in one publish; a copy
of an event that waits on the lease of the copy being delivered, which comes back within
seconds rather than after the queue's visibility timeout (360 s, the template's default);
and a receiver that hangs, which does not keep the other records of its batch from being
delivered and deleted. Last, what an operator sees: GET /health of the api function, one
log line per request under the id its answer carries, and the functions' CloudWatch EMF
lines, checked against the EMF specification and for the metrics of what the run did.

Needs HOOKLINE_TEST_AWS_ENDPOINT (moto) and cargo-lambda on PATH; scripts/test.sh sets
both up.
"""
import base64
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPERATOR_KEY = "hkop_e2e-operator-key-0123456789abcdef"
METRICS_NAMESPACE = "HooklineE2E"
RESULTS = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    RESULTS["passed" if ok else "failed"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        raise SystemExit(finish())


def finish():
    print(f"e2e: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !GetAtt, …) as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.ThreadingHTTPServer):
    """Answers 200: at once on /hooks, after SLOW_SECONDS on /slow, and on /hang only once
    `release` is set (`holding` counts the requests it holds)."""

    SLOW_SECONDS = 3

    def __init__(self):
        self.requests = []
        self.by_path = {"/hooks": [], "/slow": [], "/hang": []}
        self.release = threading.Event()
        self.holding = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        server = self.server
        with server.lock:
            if self.path == "/hooks":
                server.requests.append((dict(self.headers.items()), body))
            server.by_path.setdefault(self.path, []).append(self.headers.get("webhook-id"))
        if self.path == "/slow":
            time.sleep(Receiver.SLOW_SECONDS)
        elif self.path == "/hang":
            with server.lock:
                server.holding += 1
            server.release.wait(120)
            with server.lock:
                server.holding -= 1
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def call(method, url, key=None, body=None, timeout=900):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def main():
    endpoint = os.environ["HOOKLINE_TEST_AWS_ENDPOINT"]
    aws = dict(endpoint_url=endpoint, region_name="us-east-1",
               aws_access_key_id="test", aws_secret_access_key="test")
    ddb = boto3.client("dynamodb", **aws)
    sqs = boto3.client("sqs", **aws)
    suffix = uuid.uuid4().hex[:8]

    # The table exactly as template.yaml declares it.
    with open(os.path.join(ROOT, "template.yaml"), encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)
    props = template["Resources"]["Table"]["Properties"]
    table = f"hookline-e2e-{suffix}"
    ddb.create_table(TableName=table, AttributeDefinitions=props["AttributeDefinitions"],
                     KeySchema=props["KeySchema"],
                     GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
                     BillingMode=props["BillingMode"])
    dlq_url = sqs.create_queue(QueueName=f"hookline-e2e-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=f"hookline-e2e-{suffix}", Attributes={
        "VisibilityTimeout": "360",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
    })["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]

    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    receiver_url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks"

    port = free_port()
    env_vars = {
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "TABLE_NAME": table, "QUEUE_URL": queue_url, "DLQ_URL": dlq_url,
        "HOOKLINE_OPERATOR_KEY": OPERATOR_KEY, "HOOKLINE_ALLOW_HTTP": "true",
        "HOOKLINE_ALLOWED_NETWORKS": "127.0.0.1/32", "HOOKLINE_RETRY_SCHEDULE": "0s,1s",
        # A lease is the request timeout and 15 s: a lease wait comes back within 25 s.
        "HOOKLINE_REQUEST_TIMEOUT": "10s", "HOOKLINE_CONCURRENCY": "16",
        "HOOKLINE_METRICS_NAMESPACE": METRICS_NAMESPACE,
    }
    # The binaries of the test run's debug build: scripts/build-test-bins.sh builds them
    # as `cargo test --workspace --all-features` does, so after scripts/test.sh's test run
    # this compiles nothing (`cargo lambda watch` would build each function again, with
    # other features).
    subprocess.run([os.path.join(ROOT, "scripts", "build-test-bins.sh"), "--quiet"],
                   cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    # One emulator per function, serving the Lambda runtime API only, and the function's
    # binary polling it. With --only-lambda-apis the emulator names its function `_`.
    ports, processes = {}, []
    try:
        for function in ("api", "ingest", "deliver"):
            ports[function] = free_port()
            log = open(os.path.join(ROOT, "target", f"lambda-watch-{function}.log"), "wb")
            processes.append(subprocess.Popen(
                ["cargo", "lambda", "watch", "--only-lambda-apis",
                 "-A", "127.0.0.1", "-P", str(ports[function]),
                 "--manifest-path", os.path.join(ROOT, "functions", function, "Cargo.toml")],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
            if not wait_port(ports[function]):
                raise SystemExit(f"the runtime API emulator for {function} did not start")
            processes.append(subprocess.Popen(
                [os.path.join(target, "debug", f"hookline-{function}")],
                env=dict(os.environ, **env_vars,
                         AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{ports[function]}/.rt",
                         AWS_LAMBDA_FUNCTION_NAME=f"hookline-{function}",
                         AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
                         AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128"),
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        run(ports, receiver, receiver_url, sqs, queue_url, queue_arn, dlq_url)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        receiver.shutdown()
    return finish()


def wait_port(port, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


PUMPED = []  # (time, SQS message id, receive count) of every record handed over
# A warm deliver function reuses a tenant's endpoint list for 5 s: a new endpoint gets the
# events published after that.
ENDPOINT_CACHE_SECONDS = 6


def receive(sqs, queue_url):
    """One receive as the event source makes it: up to 10, every attribute."""
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                              AttributeNames=["All"], MessageAttributeNames=["All"])
    return got.get("Messages", [])


def invoke(port, sqs, queue_url, queue_arn, messages):
    """One invocation with `messages` as the SQS event's records; then deletes what the
    function did not report in batchItemFailures, as the event source does."""
    for m in messages:
        PUMPED.append((time.time(), m["MessageId"],
                       int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))))
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {name: {
            "stringValue": value.get("StringValue"), "stringListValues": [],
            "binaryListValues": [], "dataType": value["DataType"],
        } for name, value in m.get("MessageAttributes", {}).items()},
        "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
    } for m in messages]}
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations"
    status, response = call("POST", url, body=event)
    if status != 200:
        raise SystemExit(f"deliver invocation failed: {status} {response}")
    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
    return failed


def pump(port, sqs, queue_url, queue_arn, until, within=900):
    """Moves messages from the queue into the deliver function like the event source."""
    deadline = time.time() + within
    while time.time() < deadline:
        if until():
            return True
        messages = receive(sqs, queue_url)
        if messages:
            invoke(port, sqs, queue_url, queue_arn, messages)
    return until()


def queue_counts(sqs, queue_url):
    """(visible, in flight, delayed) messages of the queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    got = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return tuple(int(got[n]) for n in names)


def run(ports, receiver, receiver_url, sqs, queue_url, queue_arn, dlq_url):
    check("runtime emulators listening", all(wait_port(p) for p in ports.values()))
    api = f"http://127.0.0.1:{ports['api']}/lambda-url/_"
    ingest = f"http://127.0.0.1:{ports['ingest']}/lambda-url/_"
    port = ports["deliver"]

    status, tenant = call("POST", f"{api}/v1/tenants", OPERATOR_KEY, {"name": "e2e"})
    check("api function creates a tenant", status == 201, f"{status} {tenant}")
    key = tenant["api_key"]
    status, ep = call("POST", f"{api}/v1/endpoints", key,
                      {"url": receiver_url, "signing": "both"})
    check("api function creates an endpoint", status == 201, f"{status} {ep}")
    status, public = call("GET", f"{api}/v1/endpoints/{ep['id']}/public-key", key)
    check("api function returns the public key",
          status == 200 and public["key"].startswith("whpk_"), f"{status} {public}")
    status, secret = call("GET", f"{api}/v1/endpoints/{ep['id']}/secret", key)
    check("api function returns the secret", status == 200 and secret["key"].startswith("whsec_"))
    status, bad = call("POST", f"{api}/v1/endpoints", key, {"url": "https://10.0.0.1/"})
    check("api function refuses a private URL", status == 400 and
          bad["error"]["code"] == "invalid_url", f"{status} {bad}")

    status, published = call("POST", f"{ingest}/v1/events", key,
                             {"type": "delivered", "payload": {"recipient": "a@example.com"}})
    check("ingest function accepts an event", status == 202, f"{status} {published}")
    status, refused = call("POST", f"{ingest}/v1/events", key, {"type": "nope", "payload": {}})
    check("ingest function refuses an unknown type", status == 400, f"{status} {refused}")

    check("deliver function delivers the event",
          pump(port, sqs, queue_url, queue_arn, lambda: len(receiver.requests) >= 1))
    headers, body = receiver.requests[0]
    lower = {k.lower(): v for k, v in headers.items()}
    check("delivery carries the message id", lower.get("webhook-id") == published["id"])
    try:
        Webhook(secret["key"]).verify(body.decode(), lower)
        verified = True
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        verified = str(e)
    check("standardwebhooks verifies the signature", verified is True, str(verified))
    ed25519 = Ed25519PublicKey.from_public_bytes(base64.b64decode(public["key"][len("whpk_"):]))
    signed = f"{lower['webhook-id']}.{lower['webhook-timestamp']}.".encode() + body
    v1a = [s[len("v1a,"):] for s in lower["webhook-signature"].split(" ") if s.startswith("v1a,")]
    try:
        check("one v1a signature", len(v1a) == 1, lower["webhook-signature"])
        ed25519.verify(base64.b64decode(v1a[0]), signed)
        verified = True
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        verified = repr(e)
    check("the deliver function's v1a signature verifies with the public key", verified is True,
          str(verified))

    # A producer writing straight to the queue, and a malformed message.
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(
        {"tenant": tenant["id"], "type": "opened", "payload": {"direct": True}}))
    sqs.send_message(QueueUrl=queue_url, MessageBody="{not json")
    check("a direct producer's event is delivered",
          pump(port, sqs, queue_url, queue_arn, lambda: len(receiver.requests) >= 2))
    check("the direct event's body is its payload",
          json.loads(receiver.requests[1][1]) == {"direct": True})
    parked = []
    deadline = time.time() + 60
    while not parked and time.time() < deadline:
        pump(port, sqs, queue_url, queue_arn, lambda: False, within=2)
        parked = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages", [])
    check("the malformed message is on the dead-letter queue",
          len(parked) == 1 and parked[0]["Body"] == "{not json")

    status, message = call("GET", f"{api}/v1/messages/{published['id']}", key)
    check("the api function shows the delivery succeeded",
          status == 200 and message["deliveries"][0]["status"] == "succeeded", f"{message}")

    paged_publish(api, ingest, key, receiver, port, sqs, queue_url, queue_arn)
    big_publish(ingest, key, receiver, port, sqs, queue_url, queue_arn)
    lease_wait(api, ingest, key, receiver, port, sqs, queue_url, queue_arn)
    hanging_receiver(api, ingest, key, receiver, port, sqs, queue_url, queue_arn)
    operations(api)


def function_log(function):
    """The JSON lines a function wrote (the emulator's own lines are not JSON)."""
    lines = []
    with open(os.path.join(ROOT, "target", f"lambda-watch-{function}.log"), "rb") as f:
        for raw in f:
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                lines.append(value)
    return lines


def emf_problems(doc):
    """What in an EMF document breaks the specification (or the metrics contract)."""
    problems = []
    aws = doc.get("_aws")
    if not isinstance(aws, dict):
        return ["no _aws object"]
    if not isinstance(aws.get("Timestamp"), int) or aws["Timestamp"] <= 0:
        problems.append("Timestamp is not a positive integer of milliseconds")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return problems + ["CloudWatchMetrics is not a non-empty array"]
    for d in directives:
        if d.get("Namespace") != METRICS_NAMESPACE:
            problems.append(f"namespace {d.get('Namespace')!r}")
        sets = d.get("Dimensions")
        if not isinstance(sets, list) or len(sets) != 1:
            problems.append("not exactly one dimension set")
            continue
        for name in sets[0]:
            if not isinstance(doc.get(name), str):
                problems.append(f"dimension {name} is not a string member of the root")
        metrics = d.get("Metrics")
        if not isinstance(metrics, list) or not 1 <= len(metrics) <= 100:
            problems.append("Metrics is not an array of 1 to 100 directives")
            continue
        for m in metrics:
            name = m.get("Name")
            value = doc.get(name)
            numbers = value if isinstance(value, list) else [value]
            if not (1 <= len(numbers) <= 100 and
                    all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        for v in numbers)):
                problems.append(f"{name} is not a number or an array of up to 100 numbers")
            if m.get("Unit") not in (None, "Count", "Milliseconds", "Seconds"):
                problems.append(f"{name} has unit {m.get('Unit')!r}")
    return problems


def metric_total(docs, name, **labels):
    """The sum of a metric over the documents whose dimensions are exactly `labels`."""
    total = 0
    for doc in docs:
        dims = doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
        if name in doc and sorted(dims) == sorted(labels) and all(
                doc.get(k) == v for k, v in labels.items()):
            value = doc[name]
            total += len(value) if isinstance(value, list) else value
    return total


def operations(api):
    req = urllib.request.Request(f"{api}/health", method="GET")
    req.add_header("x-request-id", "e2e-health-check")
    with urllib.request.urlopen(req, timeout=300) as resp:
        status, answer_id = resp.status, resp.headers.get("x-request-id")
        health = json.loads(resp.read())
    check("the api function's /health answers 200 with storage and queue ok",
          status == 200 and health["status"] == "ok" and health["storage"] == "ok"
          and health["queue"] == "ok", f"{status} {health}")
    check("the answer carries the request id the caller sent",
          answer_id == "e2e-health-check", f"{answer_id}")

    logs = {f: function_log(f) for f in ("api", "ingest", "deliver")}
    health_lines = [line for line in logs["api"]
                    if line.get("target") == "hookline::request"
                    and line.get("fields", {}).get("request_id") == "e2e-health-check"]
    check("the api function logs one JSON line for the request, under its id",
          len(health_lines) == 1 and health_lines[0]["fields"]["route"] == "/health"
          and health_lines[0]["fields"]["status"] == 200, f"{health_lines}")
    publish_lines = [line for line in logs["ingest"]
                     if line.get("target") == "hookline::request"
                     and line.get("fields", {}).get("route") == "/v1/events"]
    check("the ingest function logs its requests with status and tenant",
          publish_lines and all(line["fields"].get("tenant", "").startswith("tn_")
                                for line in publish_lines), f"{publish_lines[:2]}")

    emf = {f: [line for line in lines if "_aws" in line] for f, lines in logs.items()}
    problems = [(f, p, doc) for f, docs in emf.items() for doc in docs for p in emf_problems(doc)]
    check("every function wrote EMF lines", all(emf.values()),
          f"{ {f: len(d) for f, d in emf.items()} }")
    check("every EMF line follows the specification", not problems, f"{problems[:3]}")
    expected = [
        ("ingest", "events_accepted", {"source": "http"}),
        ("ingest", "events_refused", {"reason": "unknown_event_type"}),
        ("ingest", "api_requests", {"route": "/v1/events", "status": "202"}),
        ("ingest", "api_request_duration", {"route": "/v1/events"}),
        ("deliver", "events_accepted", {"source": "sqs"}),
        ("deliver", "events_dead_lettered", {"reason": "malformed"}),
        ("deliver", "delivery_attempts", {"outcome": "2xx"}),
        ("deliver", "attempt_duration", {"outcome": "2xx"}),
        ("deliver", "delivery_latency", {}),
        ("api", "api_requests", {"route": "/health", "status": "200"}),
    ]
    for function, name, labels in expected:
        total = metric_total(emf[function], name, **labels)
        check(f"the {function} function's EMF lines count {name} {labels}", total >= 1,
              f"{total}")


def big_publish(ingest, key, receiver, port, sqs, queue_url, queue_arn):
    """Ten events of 200 KiB, 2 MB in all: over SQS's 1 MiB per batch."""
    events = [{"type": "delivered", "payload": {"n": n, "fill": "x" * (200 * 1024)}}
              for n in range(10)]
    status, published = call("POST", f"{ingest}/v1/events", key, {"events": events})
    check("ingest function queues ten events of 200 KiB in one publish",
          status == 202 and len(published["ids"]) == 10, f"{status} {str(published)[:300]}")
    ids = set(published["ids"])

    def delivered():
        return ids <= {webhook_id(h) for h, _ in receiver.requests}
    check("deliver function delivers all ten", pump(port, sqs, queue_url, queue_arn, delivered))
    sizes = [len(body) for h, body in receiver.requests
             if webhook_id(h) in ids]
    check("each arrives whole", len(sizes) == 10 and min(sizes) > 200 * 1024, f"{sizes}")


def lease_wait(api, ingest, key, receiver, port, sqs, queue_url, queue_arn):
    """A duplicate of an event in the same batch as the event: while the event's requests
    are out (one receiver takes 3 s), the duplicate waits for their lease and comes back
    when it ends, not after the queue's 360 s visibility timeout."""
    status, slow = call("POST", f"{api}/v1/endpoints", key, {
        "url": receiver_base(receiver) + "/slow", "event_types": ["complained"]})
    check("api function creates a slow endpoint", status == 201, f"{status} {slow}")
    time.sleep(ENDPOINT_CACHE_SECONDS)
    status, published = call("POST", f"{ingest}/v1/events", key,
                             {"type": "complained", "payload": {"lease": True}})
    check("ingest function accepts the event", status == 202, f"{status} {published}")
    # SQS hands the same message over twice (at-least-once): a second message with the
    # same body, the event task ingest queued.
    queued = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0,
                                 WaitTimeSeconds=1).get("Messages", [])
    check("the event is on the queue", len(queued) == 1, f"{queued}")
    sqs.send_message(QueueUrl=queue_url, MessageBody=queued[0]["Body"])
    deadline = time.time() + 10
    batch = []
    while len(batch) < 2 and time.time() < deadline:
        batch += receive(sqs, queue_url)
    check("both copies in one batch", len(batch) == 2, f"{len(batch)}")
    started, before = time.time(), len(PUMPED) + len(batch)
    failed = invoke(port, sqs, queue_url, queue_arn, batch)
    check("the copy that waits on the lease is handed back", len(failed) == 1, f"{failed}")
    waiting = failed.pop()

    def settled():
        return queue_counts(sqs, queue_url) == (0, 0, 0)
    # A bound on failure only: the lease ends within 25 s; the visibility timeout is 360 s.
    check("the waiting copy comes back within seconds and is done",
          pump(port, sqs, queue_url, queue_arn, settled, within=120)
          and time.time() - started < 120)
    again = [t - started for t, m, _ in PUMPED[before:] if m == waiting]
    check("it came back once, when the lease ended", len(again) == 1 and again[0] < 60,
          f"after {again} s")
    sent = receiver.by_path["/slow"].count(published["id"])
    hooks = [webhook_id(h) for h, _ in receiver.requests]
    check("each endpoint got the event once", sent == 1 and hooks.count(published["id"]) == 1,
          f"/slow {sent}, /hooks {hooks.count(published['id'])}")


def hanging_receiver(api, ingest, key, receiver, port, sqs, queue_url, queue_arn):
    """A batch where one record waits on a receiver that hangs: the others are delivered
    and deleted from the queue while it is held."""
    status, hang = call("POST", f"{api}/v1/endpoints", key, {
        "url": receiver_base(receiver) + "/hang", "event_types": ["clicked"]})
    check("api function creates an endpoint that hangs", status == 201, f"{status} {hang}")
    time.sleep(ENDPOINT_CACHE_SECONDS)
    # Published one by one: each is a record of its own (the events of one publish
    # would share a page, one record).
    published = {"ids": []}
    statuses = []
    for event in [
        {"type": "clicked", "payload": {"hang": True}},
        {"type": "opened", "payload": {"n": 1}},
        {"type": "opened", "payload": {"n": 2}},
    ]:
        status, answer = call("POST", f"{ingest}/v1/events", key, event)
        statuses.append(status)
        published["ids"].append(answer.get("id"))
    check("ingest function accepts the three events", statuses == [202] * 3,
          f"{statuses} {published}")
    others = set(published["ids"][1:])
    deadline = time.time() + 10
    batch = []
    while len(batch) < 3 and time.time() < deadline:
        batch += receive(sqs, queue_url)
    check("the three in one batch", len(batch) == 3, f"{len(batch)}")
    result = {}
    invocation = threading.Thread(
        target=lambda: result.update(failed=invoke(port, sqs, queue_url, queue_arn, batch)))
    invocation.start()
    deadline = time.time() + 8  # within the 10 s request timeout of the hanging request
    while time.time() < deadline:
        hooks = {webhook_id(h) for h, _ in receiver.requests}
        if others <= hooks and queue_counts(sqs, queue_url) == (0, 1, 0):
            break
        time.sleep(0.2)
    hooks = {webhook_id(h) for h, _ in receiver.requests}
    counts = queue_counts(sqs, queue_url)
    check("the others are delivered and deleted while the hanging request is held",
          others <= hooks and counts == (0, 1, 0) and receiver.holding == 1
          and invocation.is_alive(), f"counts {counts}, holding {receiver.holding}")
    receiver.release.set()
    invocation.join(60)
    check("the invocation ends once the receiver answers",
          not invocation.is_alive() and result.get("failed") == set(), f"{result}")
    check("the hanging event is delivered too",
          published["ids"][0] in receiver.by_path["/hang"]
          and pump(port, sqs, queue_url, queue_arn,
                   lambda: queue_counts(sqs, queue_url) == (0, 0, 0), within=60))


def paged_publish(api, ingest, key, receiver, port, sqs, queue_url, queue_arn):
    """Five events in one publish travel as one page: one record on the queue, each event
    delivered once, and each shown by the api function with its delivery."""
    before = len(receiver.requests)
    status, published = call("POST", f"{ingest}/v1/events", key, {"events": [
        {"type": "delivered", "payload": {"page": n}} for n in range(5)]})
    check("ingest function accepts five events", status == 202, f"{status} {published}")
    ids = published["ids"]
    check("the five are one record on the queue", queue_counts(sqs, queue_url) == (1, 0, 0),
          f"{queue_counts(sqs, queue_url)}")
    check("deliver function delivers the page",
          pump(port, sqs, queue_url, queue_arn,
               lambda: set(ids) <= {webhook_id(h) for h, _ in receiver.requests[before:]}))
    hooks = sorted(webhook_id(h) for h, _ in receiver.requests[before:])
    check("each event of the page once", hooks == sorted(ids), f"{hooks}")
    status, message = call("GET", f"{api}/v1/messages/{ids[3]}", key)
    check("the api function shows a message of the page and its delivery",
          status == 200 and message["payload"] == {"page": 3}
          and message["deliveries"][0]["status"] == "succeeded", f"{status} {message}")


def receiver_base(receiver):
    return f"http://127.0.0.1:{receiver.server_address[1]}"


def webhook_id(headers):
    return {k.lower(): v for k, v in headers.items()}.get("webhook-id")


if __name__ == "__main__":
    sys.exit(main())

"""Wiring checks for the SAM template (template.yaml at the repository root).

Run with `python -m unittest discover -s tests/template -v` (scripts/check-template.sh does,
after cfn-lint and `sam validate --lint`). Needs PyYAML; the translated-template test also
needs aws-sam-translator (both in tests/template/requirements.txt).
"""

import ast
import copy
import json
import operator
import os
import re
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "template.yaml")

FUNCTIONS = {
    "ApiFunction": "hookline-api",
    "IngestFunction": "hookline-ingest",
    "DeliverFunction": "hookline-deliver",
}

# Each function's reserved-concurrency parameter.
RESERVED = {
    "ApiFunction": "ApiReservedConcurrency",
    "IngestFunction": "IngestReservedConcurrency",
    "DeliverFunction": "DeliverReservedConcurrency",
}

# SQS's upper bound for a queue's visibility timeout, in seconds.
SQS_MAX_VISIBILITY = 43200

# The metrics contract of the functions' embedded metrics: each name and its dimensions.
OUTCOMES = ("2xx", "4xx", "5xx", "timeout", "connect", "tls", "url_policy", "rate_limited")
CONTRACT_LABELS = {
    "events_accepted": {"source"},
    "events_refused": {"reason"},
    "events_dead_lettered": {"reason"},
    "delivery_attempts": {"outcome"},
    "attempt_duration": {"outcome"},
    "delivery_latency": set(),
    "retries_scheduled": set(),
    "deliveries_exhausted": set(),
    "endpoints_disabled": set(),
    "api_requests": {"route", "status"},
    "api_request_duration": {"route"},
}


class CfnLoader(yaml.SafeLoader):
    """A SafeLoader that turns CloudFormation short-form tags into their long form."""


def _construct_tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {"Fn::" + tag_suffix: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def _math(node, queries, values, case):
    """Evaluates a CloudWatch metric-math expression for one period; None is no data."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return case.evaluate(queries, node.id, values)
    if isinstance(node, ast.List):
        return [_math(e, queries, values, case) for e in node.elts]
    if isinstance(node, ast.BinOp):
        left = _math(node.left, queries, values, case)
        right = _math(node.right, queries, values, case)
        if left is None or right is None:
            return None
        ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
        ops[ast.Div] = operator.truediv
        return ops[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        [op], [right] = node.ops, node.comparators
        left = _math(node.left, queries, values, case)
        right = _math(right, queries, values, case)
        if left is None or right is None:
            return None
        ops = {ast.GtE: operator.ge, ast.Gt: operator.gt, ast.Lt: operator.lt, ast.LtE: operator.le}
        return ops[type(op)](left, right)
    if isinstance(node, ast.Call):
        args = [_math(a, queries, values, case) for a in node.args]
        fn = node.func.id
        if fn == "FILL":
            return args[1] if args[0] is None else args[0]
        if fn == "SUM":
            present = [v for v in args[0] if v is not None]
            return sum(present) if present else None
        if fn == "IF":
            cond, then, other = args
            if cond is None:
                return None
            return then if cond else other
    raise AssertionError(f"metric math not understood here: {ast.dump(node)}")


def load_template():
    with open(TEMPLATE, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def actions_of(statement):
    action = statement.get("Action", [])
    return [action] if isinstance(action, str) else list(action)


def resources_of(statement):
    res = statement.get("Resource", [])
    return [res] if not isinstance(res, list) else list(res)


def referenced_resource(resource):
    """The logical id an IAM Resource entry points at, or None for a literal."""
    if isinstance(resource, dict):
        if "Fn::GetAtt" in resource:
            return resource["Fn::GetAtt"][0]
        if "Ref" in resource:
            return resource["Ref"]
        if "Fn::Sub" in resource:
            sub = resource["Fn::Sub"]
            text = sub if isinstance(sub, str) else sub[0]
            m = re.match(r"^\$\{(\w+)\.Arn\}", text)
            return m.group(1) if m else None
    return None


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = load_template()
        cls.res = cls.t["Resources"]
        cls.params = cls.t["Parameters"]

    # --- helpers -------------------------------------------------------------------------

    def props(self, logical_id):
        return self.res[logical_id].get("Properties", {})

    def statements_of_function(self, name):
        """Every IAM statement that applies to the function's role."""
        props = self.props(name)
        out = []
        role = props.get("Role")
        if role is not None:
            role_id = referenced_resource(role)
            self.assertIn(role_id, self.res, f"{name}'s Role must be a role of this template")
            for policy in self.props(role_id).get("Policies", []):
                out.extend(policy["PolicyDocument"]["Statement"])
        for policy in props.get("Policies", []):
            self.assertIsInstance(
                policy, dict, f"{name}: use explicit statements, not SAM policy templates/ARNs"
            )
            self.assertEqual(
                set(policy), {"Version", "Statement"}, f"{name}: unexpected policy shape"
            )
            out.extend(policy["Statement"])
        return out

    def actions_of_function(self, name, prefix=""):
        return [
            a
            for s in self.statements_of_function(name)
            for a in actions_of(s)
            if a.lower().startswith(prefix)
        ]

    def function_env(self, name):
        env = dict(self.t["Globals"]["Function"]["Environment"]["Variables"])
        env.update(self.props(name).get("Environment", {}).get("Variables", {}))
        return env

    # --- shape -----------------------------------------------------------------------------

    def test_is_a_sam_template(self):
        self.assertEqual(self.t["AWSTemplateFormatVersion"], "2010-09-09")
        self.assertEqual(self.t["Transform"], "AWS::Serverless-2016-10-31")

    def test_globals_run_bootstrap_on_provided_al2023_arm64(self):
        g = self.t["Globals"]["Function"]
        self.assertEqual(g["Runtime"], "provided.al2023")
        self.assertEqual(g["Architectures"], ["arm64"])
        self.assertEqual(g["Handler"], "bootstrap")
        for name in FUNCTIONS:
            p = self.props(name)
            for key in ("Runtime", "Architectures", "Handler"):
                self.assertNotIn(key, p, f"{name} overrides the global {key}")

    def test_three_functions_built_by_cargo_lambda(self):
        functions = {
            k for k, v in self.res.items() if v["Type"] == "AWS::Serverless::Function"
        }
        self.assertEqual(functions, set(FUNCTIONS))
        for name, binary in FUNCTIONS.items():
            meta = self.res[name].get("Metadata", {})
            self.assertEqual(meta.get("BuildMethod"), "rust-cargolambda", name)
            self.assertEqual(meta.get("BuildProperties", {}).get("Binary"), binary, name)
            # The function's own package: cargo-lambda builds `--bin <Binary>` in the package
            # of the manifest it finds there (the workspace root is the local-mode binary).
            self.assertEqual(
                self.props(name).get("CodeUri"), f"functions/{binary.removeprefix('hookline-')}", name
            )

    def test_function_timeouts(self):
        self.assertEqual(self.props("ApiFunction")["Timeout"], 29)
        self.assertEqual(self.props("IngestFunction")["Timeout"], 10)
        self.assertEqual(self.props("DeliverFunction")["Timeout"], {"Ref": "DeliverTimeout"})

    def test_http_api_routes(self):
        self.assertEqual(self.res["HttpApi"]["Type"], "AWS::Serverless::HttpApi")

        def routes(name):
            out = set()
            for ev in self.props(name).get("Events", {}).values():
                self.assertEqual(ev["Type"], "HttpApi", name)
                self.assertEqual(ev["Properties"]["ApiId"], {"Ref": "HttpApi"}, name)
                out.add((ev["Properties"]["Method"].upper(), ev["Properties"]["Path"]))
            return out

        self.assertEqual(
            routes("ApiFunction"),
            {
                ("ANY", "/v1/{proxy+}"),
                ("ANY", "/v3/{proxy+}"),
                ("GET", "/openapi.json"),
                ("GET", "/portal"),
                ("ANY", "/portal/{proxy+}"),
                ("GET", "/health"),
            },
        )
        self.assertEqual(routes("IngestFunction"), {("POST", "/v1/events")})

    def test_environment(self):
        for name in FUNCTIONS:
            env = self.function_env(name)
            self.assertEqual(env["TABLE_NAME"], {"Ref": "Table"}, name)
            self.assertEqual(env["HOOKLINE_RETRY_SCHEDULE"], {"Ref": "RetrySchedule"}, name)
            self.assertEqual(env["HOOKLINE_RETENTION_DAYS"], {"Ref": "RetentionDays"}, name)
            self.assertEqual(env["HOOKLINE_ALLOW_HTTP"], {"Ref": "AllowHttp"}, name)
            self.assertEqual(env["HOOKLINE_DISABLE_AFTER"], {"Ref": "DisableAfter"}, name)
            self.assertEqual(env["HOOKLINE_FAILING_AFTER"], {"Ref": "FailingAfterAttempts"}, name)
        self.assertEqual(self.function_env("IngestFunction")["QUEUE_URL"], {"Ref": "EventsQueue"})
        deliver = self.function_env("DeliverFunction")
        self.assertEqual(deliver["QUEUE_URL"], {"Ref": "EventsQueue"})
        self.assertEqual(deliver["DLQ_URL"], {"Ref": "DeadLetterQueue"})
        # The bound on requests in flight per invocation, read as local mode reads it.
        self.assertEqual(deliver["HOOKLINE_CONCURRENCY"], {"Ref": "DeliverRequestLimit"})
        for name in ("ApiFunction", "IngestFunction"):
            self.assertNotIn("HOOKLINE_CONCURRENCY", self.function_env(name), name)
        # The api function queues replays.
        self.assertEqual(self.function_env("ApiFunction")["QUEUE_URL"], {"Ref": "EventsQueue"})
        # It serves the portal, branded and framed as the stack's parameters say.
        api = self.function_env("ApiFunction")
        for var, param in [
            ("HOOKLINE_PORTAL_FRAME_ANCESTORS", "PortalFrameAncestors"),
            ("HOOKLINE_PORTAL_TITLE", "PortalTitle"),
            ("HOOKLINE_PORTAL_LOGO_URL", "PortalLogoUrl"),
            ("HOOKLINE_PORTAL_ACCENT", "PortalAccent"),
        ]:
            self.assertEqual(api[var], {"Ref": param}, var)
            self.assertIn(param, self.params)

    def test_parameter_defaults(self):
        p = self.params
        self.assertEqual(p["RetrySchedule"]["Default"], "0s,5s,5m,30m,2h,5h,10h,10h")
        self.assertEqual(p["RetentionDays"]["Type"], "Number")
        self.assertEqual(int(p["RetentionDays"]["Default"]), 30)
        # Messages outlive SQS's 14-day retention, so a late copy of an event finds its
        # message and is not delivered again.
        self.assertGreater(int(p["RetentionDays"]["MinValue"]), 14)
        self.assertEqual(set(p["AllowHttp"]["AllowedValues"]), {"true", "false"})
        self.assertEqual(p["AllowHttp"]["Default"], "false")
        # The code's own defaults (README's configuration table), and the values each
        # parameter takes: what HOOKLINE_DISABLE_AFTER and HOOKLINE_FAILING_AFTER parse.
        self.assertEqual(p["DisableAfter"]["Default"], "5d")
        self.assertEqual(p["FailingAfterAttempts"]["Default"], "3")
        cases = {
            "DisableAfter": (["5d", "12h", "90m", "3600s", "off"], ["", "0", "0d", "5", "5 d", "-1h", "1w"]),
            "FailingAfterAttempts": (["1", "3", "9999", "off"], ["", "0", "03", "10000", "OFF", "x"]),
        }
        for param, (good, bad) in cases.items():
            pattern = re.compile(p[param]["AllowedPattern"])
            for value in good:
                self.assertIsNotNone(pattern.fullmatch(value), f"{param} {value!r}")
            for value in bad:
                self.assertIsNone(pattern.fullmatch(value), f"{param} {value!r}")

    def test_operator_key_is_no_echo_and_reaches_only_the_api(self):
        key = self.params["OperatorKey"]
        self.assertIs(key.get("NoEcho"), True)
        self.assertGreaterEqual(int(key["MinLength"]), 32)
        self.assertNotIn("Default", key)
        self.assertEqual(
            self.function_env("ApiFunction")["HOOKLINE_OPERATOR_KEY"], {"Ref": "OperatorKey"}
        )
        for name in ("IngestFunction", "DeliverFunction"):
            self.assertNotIn("HOOKLINE_OPERATOR_KEY", self.function_env(name), name)

    # --- queue and event source -------------------------------------------------------------

    def test_deliver_sqs_event_source(self):
        events = self.props("DeliverFunction")["Events"]
        sqs = [
            e["Properties"]
            for e in events.values()
            if e["Type"] == "SQS" and e["Properties"]["Queue"]["Fn::GetAtt"][0] == "EventsQueue"
        ]
        self.assertEqual(len(sqs), 1)
        ev = sqs[0]
        self.assertEqual(ev["Queue"], {"Fn::GetAtt": ["EventsQueue", "Arn"]})
        self.assertIn("ReportBatchItemFailures", ev["FunctionResponseTypes"])
        self.assertEqual(ev["BatchSize"], {"Ref": "DeliverBatchSize"})
        self.assertEqual(ev["ScalingConfig"]["MaximumConcurrency"], {"Ref": "DeliverMaxConcurrency"})
        self.assertEqual(ev["MaximumBatchingWindowInSeconds"], {"Ref": "DeliverBatchingWindow"})

    def test_ordered_queue_is_fifo_with_a_fifo_dead_letter_queue_and_feeds_deliver(self):
        q = self.props("OrderedQueue")
        self.assertIs(q["FifoQueue"], True)
        # Deduplication ids are the tasks' own: two events with equal bodies are two.
        self.assertIs(q["ContentBasedDeduplication"], False)
        self.assertEqual(q["VisibilityTimeout"], self.props("EventsQueue")["VisibilityTimeout"])
        self.assertIs(q.get("SqsManagedSseEnabled"), True)
        self.assertEqual(
            q["RedrivePolicy"]["deadLetterTargetArn"],
            {"Fn::GetAtt": ["OrderedDeadLetterQueue", "Arn"]},
        )
        # A held sequence is received on every retry of its head: far more than 5.
        self.assertGreaterEqual(int(q["RedrivePolicy"]["maxReceiveCount"]), 50)
        self.assertIs(self.props("OrderedDeadLetterQueue")["FifoQueue"], True)
        events = self.props("DeliverFunction")["Events"]
        fifo = [
            e["Properties"]
            for e in events.values()
            if e["Type"] == "SQS"
            and e["Properties"]["Queue"] == {"Fn::GetAtt": ["OrderedQueue", "Arn"]}
        ]
        self.assertEqual(len(fifo), 1)
        ev = fifo[0]
        self.assertIn("ReportBatchItemFailures", ev["FunctionResponseTypes"])
        self.assertLessEqual(int(ev["BatchSize"]), 10)
        self.assertNotIn("MaximumBatchingWindowInSeconds", ev)
        for name in ("ApiFunction", "IngestFunction", "DeliverFunction"):
            self.assertEqual(
                self.function_env(name)["ORDERED_QUEUE_URL"], {"Ref": "OrderedQueue"}, name
            )

    def test_deliver_parameter_bounds(self):
        batch = self.params["DeliverBatchSize"]
        self.assertEqual(
            (int(batch["Default"]), int(batch["MinValue"]), int(batch["MaxValue"])), (10, 1, 10)
        )
        conc = self.params["DeliverMaxConcurrency"]
        self.assertEqual(
            (int(conc["Default"]), int(conc["MinValue"]), int(conc["MaxValue"])), (10, 2, 1000)
        )
        # HOOKLINE_CONCURRENCY's range and default (functions/core/src/lambda.rs).
        limit = self.params["DeliverRequestLimit"]
        self.assertEqual(limit["Type"], "Number")
        self.assertEqual(
            (int(limit["Default"]), int(limit["MinValue"]), int(limit["MaxValue"])),
            (256, 1, 65536),
        )
        self.assertEqual(int(self.params["DeliverTimeout"]["Default"]), 60)
        # Lambda's range for MaximumBatchingWindowInSeconds; 0 (no wait) keeps latency least.
        window = self.params["DeliverBatchingWindow"]
        self.assertEqual(window["Type"], "Number")
        self.assertEqual(
            (int(window["Default"]), int(window["MinValue"]), int(window["MaxValue"])), (0, 0, 300)
        )

    # --- scale settings (docs/scale.md) ------------------------------------------------------

    def condition(self, name, **values):
        """Evaluates a condition of the template with the given parameter values (as
        CloudFormation passes them: strings), the others at their defaults."""

        def param(ref):
            if ref in values:
                return str(values[ref])
            return str(self.params[ref]["Default"])

        def ev(node):
            if isinstance(node, dict) and len(node) == 1:
                [(fn, arg)] = node.items()
                if fn == "Ref":
                    return param(arg)
                if fn == "Condition":
                    return ev(self.t["Conditions"][arg])
                if fn == "Fn::Not":
                    return not ev(arg[0])
                if fn == "Fn::Equals":
                    # CloudFormation compares the two sides as strings.
                    return str(ev(arg[0])) == str(ev(arg[1]))
            if isinstance(node, (str, int)):
                return node
            raise AssertionError(f"condition not understood here: {node}")

        return ev(self.t["Conditions"][name])

    def test_reserved_concurrency_per_function_is_unreserved_at_zero(self):
        for name, param in RESERVED.items():
            p = self.params[param]
            self.assertEqual(p["Type"], "Number", param)
            self.assertEqual((int(p["Default"]), int(p["MinValue"])), (0, 0), param)
            value = self.props(name)["ReservedConcurrentExecutions"]
            cond, then, other = value["Fn::If"]
            self.assertEqual(then, {"Ref": param}, name)
            self.assertEqual(other, {"Ref": "AWS::NoValue"}, name)
            # 0 (the default) must leave the function unreserved: reserving 0 stops it.
            self.assertFalse(self.condition(cond), f"{name} reserved at the default")
            self.assertFalse(self.condition(cond, **{param: 0}), name)
            self.assertTrue(self.condition(cond, **{param: 50}), name)
            # Each function's condition reads its own parameter only.
            others = {k: 7 for k in RESERVED.values() if k != param}
            self.assertFalse(self.condition(cond, **others), f"{name} reads another parameter")

    def test_api_stage_throttling_only_when_a_rate_is_set(self):
        for param in ("ApiThrottlingRateLimit", "ApiThrottlingBurstLimit"):
            self.assertEqual(self.params[param]["Type"], "Number", param)
        self.assertEqual(int(self.params["ApiThrottlingRateLimit"]["Default"]), 0)
        self.assertGreaterEqual(int(self.params["ApiThrottlingBurstLimit"]["MinValue"]), 1)
        settings = self.props("HttpApi")["DefaultRouteSettings"]
        cond, then, other = settings["Fn::If"]
        self.assertEqual(
            then,
            {
                "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
                "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
            },
        )
        self.assertEqual(other, {"Ref": "AWS::NoValue"})
        self.assertFalse(self.condition(cond))
        self.assertFalse(self.condition(cond, ApiThrottlingBurstLimit=100))
        self.assertTrue(self.condition(cond, ApiThrottlingRateLimit=2000))

    @unittest.skipUnless(
        __import__("importlib").util.find_spec("samtranslator"), "aws-sam-translator not installed"
    )
    def test_translated_scale_settings_reach_the_deployed_resources(self):
        """What SAM generates carries the settings: the functions' reserved concurrency,
        the event source mapping's batching and the HTTP API stage's route throttling."""
        out = self.translated()["Resources"]
        for name, param in RESERVED.items():
            reserved = out[name]["Properties"]["ReservedConcurrentExecutions"]
            self.assertEqual(reserved["Fn::If"][1], {"Ref": param}, name)
        mappings = {
            v["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: v["Properties"]
            for v in out.values()
            if v["Type"] == "AWS::Lambda::EventSourceMapping"
        }
        self.assertEqual(set(mappings), {"EventsQueue", "OrderedQueue"})
        ordered = mappings["OrderedQueue"]
        self.assertEqual(ordered["FunctionName"], {"Ref": "DeliverFunction"})
        self.assertEqual(ordered["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertNotIn("MaximumBatchingWindowInSeconds", ordered)
        m = mappings["EventsQueue"]
        self.assertEqual(m["FunctionName"], {"Ref": "DeliverFunction"})
        self.assertEqual(m["BatchSize"], {"Ref": "DeliverBatchSize"})
        self.assertEqual(m["MaximumBatchingWindowInSeconds"], {"Ref": "DeliverBatchingWindow"})
        self.assertEqual(
            m["ScalingConfig"], {"MaximumConcurrency": {"Ref": "DeliverMaxConcurrency"}}
        )
        [stage] = [v for v in out.values() if v["Type"] == "AWS::ApiGatewayV2::Stage"]
        self.assertEqual(stage["Properties"]["ApiId"], {"Ref": "HttpApi"})
        route = stage["Properties"]["DefaultRouteSettings"]["Fn::If"][1]
        self.assertEqual(route["ThrottlingRateLimit"], {"Ref": "ApiThrottlingRateLimit"})
        self.assertEqual(route["ThrottlingBurstLimit"], {"Ref": "ApiThrottlingBurstLimit"})

    def test_events_queue_redrives_to_the_dead_letter_queue(self):
        q = self.props("EventsQueue")
        self.assertEqual(
            q["RedrivePolicy"]["deadLetterTargetArn"], {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
        )
        self.assertEqual(int(q["RedrivePolicy"]["maxReceiveCount"]), 5)
        self.assertEqual(self.res["DeadLetterQueue"]["Type"], "AWS::SQS::Queue")

    def _visibility_for(self, deliver_timeout):
        vis = self.props("EventsQueue")["VisibilityTimeout"]
        if isinstance(vis, int):
            return vis
        self.assertIn("Fn::FindInMap", vis, "VisibilityTimeout: literal or DeliverTimeouts mapping")
        mapping, key, attr = vis["Fn::FindInMap"]
        self.assertEqual(key, {"Ref": "DeliverTimeout"})
        return int(self.t["Mappings"][mapping][str(deliver_timeout)][attr])

    def test_queue_visibility_is_six_times_deliver_timeout(self):
        param = self.params["DeliverTimeout"]
        timeouts = {int(param["Default"])}
        timeouts.update(int(v) for v in param.get("AllowedValues", []))
        if "AllowedValues" not in param:
            # A free-form timeout could exceed a fixed visibility timeout.
            self.assertIn("MaxValue", param)
            timeouts.add(int(param["MaxValue"]))
        for timeout in sorted(timeouts):
            vis = self._visibility_for(timeout)
            self.assertGreaterEqual(vis, 6 * timeout, f"DeliverTimeout={timeout}")
            self.assertLessEqual(vis, SQS_MAX_VISIBILITY, f"DeliverTimeout={timeout}")
            self.assertLessEqual(timeout, 900, "Lambda's timeout is at most 900 s")

    def test_queues_retention_size_encryption(self):
        events = self.props("EventsQueue")
        self.assertEqual(int(events["MessageRetentionPeriod"]), 1209600)
        self.assertEqual(int(events["MaximumMessageSize"]), 1048576)
        for q in ("EventsQueue", "DeadLetterQueue"):
            p = self.props(q)
            self.assertIs(p.get("SqsManagedSseEnabled"), True, q)
        self.assertEqual(int(self.props("DeadLetterQueue")["MessageRetentionPeriod"]), 1209600)

    # --- table -----------------------------------------------------------------------------

    def test_table_on_demand_pitr_sse_ttl_retained(self):
        table = self.res["Table"]
        self.assertEqual(table["Type"], "AWS::DynamoDB::Table")
        self.assertEqual(table.get("DeletionPolicy"), "Retain")
        self.assertEqual(table.get("UpdateReplacePolicy"), "Retain")
        p = table["Properties"]
        self.assertEqual(p["BillingMode"], "PAY_PER_REQUEST")
        self.assertIs(p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], True)
        self.assertIs(p["SSESpecification"]["SSEEnabled"], True)
        self.assertEqual(
            p["TimeToLiveSpecification"], {"AttributeName": "expires_at", "Enabled": True}
        )

    def test_table_keys_and_indexes(self):
        # As functions/core/src/aws/dynamo.rs's create_table makes the table.
        p = self.props("Table")
        attrs = {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]}
        self.assertEqual(
            attrs,
            {"pk": "S", "sk": "S", "gsi2pk": "S", "gsi2sk": "S"},
        )
        keys = [(k["AttributeName"], k["KeyType"]) for k in p["KeySchema"]]
        self.assertEqual(keys, [("pk", "HASH"), ("sk", "RANGE")])
        indexes = {g["IndexName"]: g for g in p["GlobalSecondaryIndexes"]}
        # Messages are listed from the table: no index doubles their writes.
        self.assertEqual(sorted(indexes), ["gsi2"])
        for name, gsi in indexes.items():
            keys = [(k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]]
            self.assertEqual(keys, [(f"{name}pk", "HASH"), (f"{name}sk", "RANGE")])
            self.assertEqual(gsi["Projection"]["ProjectionType"], "ALL")

    # --- least privilege -------------------------------------------------------------------

    def test_api_function_sends_to_the_events_queue_and_reads_the_dead_letters(self):
        # It queues replays, redrives and operational events and probes the events queue
        # for /health; it reads and empties the dead-letter queue for the operator; it never
        # consumes the events queue.
        stmts = self.statements_of_function("ApiFunction")
        self.assertTrue(stmts, "the api function needs its table permissions")
        by_queue = {}
        for s in stmts:
            acts = [a.lower() for a in actions_of(s)]
            self.assertNotIn("dynamodb:scan", acts)
            if any(a.startswith("sqs:") for a in acts):
                for r in resources_of(s):
                    by_queue.setdefault(referenced_resource(r), set()).update(
                        a for a in acts if a.startswith("sqs:")
                    )
        self.assertEqual(
            by_queue,
            {
                "EventsQueue": {"sqs:sendmessage", "sqs:getqueueattributes"},
                "DeadLetterQueue": {
                    "sqs:receivemessage",
                    "sqs:changemessagevisibility",
                    "sqs:deletemessage",
                },
            },
        )
        self.assertEqual(
            self.function_env("ApiFunction")["DLQ_URL"], {"Ref": "DeadLetterQueue"}
        )
        self.assertNotIn("Role", self.props("ApiFunction"))

    def test_ingest_sends_only_to_the_events_and_ordered_queues_and_never_scans(self):
        stmts = self.statements_of_function("IngestFunction")
        sqs_actions = set()
        for s in stmts:
            acts = [a.lower() for a in actions_of(s)]
            self.assertNotIn("dynamodb:scan", acts)
            if any(a.startswith("sqs:") for a in acts):
                sqs_actions.update(acts)
                self.assertEqual(
                    [referenced_resource(r) for r in resources_of(s)],
                    ["EventsQueue", "OrderedQueue"],
                )
        self.assertEqual(sqs_actions, {"sqs:sendmessage"})

    def test_deliver_sqs_actions_scoped_to_the_two_queues(self):
        stmts = self.statements_of_function("DeliverFunction")
        send, consume = set(), set()
        for s in stmts:
            acts = [a.lower() for a in actions_of(s)]
            self.assertNotIn("dynamodb:scan", acts)
            targets = {referenced_resource(r) for r in resources_of(s)}
            if any(a.startswith("sqs:") for a in acts):
                self.assertTrue(
                    targets <= {"EventsQueue", "DeadLetterQueue", "OrderedQueue"}, targets
                )
                if "sqs:sendmessage" in acts:
                    send |= targets
                if "sqs:receivemessage" in acts:
                    consume |= targets
        self.assertEqual(send, {"EventsQueue", "DeadLetterQueue", "OrderedQueue"})
        self.assertEqual(consume, {"EventsQueue", "OrderedQueue"})
        # Exactly what the event source and the function use, queue by queue: the event
        # source receives, deletes and reads attributes; the function sends (retries,
        # delayed copies, dead letters), deletes handled records early, changes the
        # visibility of a record that must wait, and reads the redrive policy.
        by_queue = {}
        for s in stmts:
            for r in resources_of(s):
                queue = referenced_resource(r)
                if queue in ("EventsQueue", "DeadLetterQueue", "OrderedQueue"):
                    by_queue.setdefault(queue, set()).update(
                        a.lower() for a in actions_of(s) if a.lower().startswith("sqs:")
                    )
        self.assertEqual(
            by_queue,
            {
                "EventsQueue": {
                    "sqs:sendmessage",
                    "sqs:receivemessage",
                    "sqs:deletemessage",
                    "sqs:getqueueattributes",
                    "sqs:changemessagevisibility",
                },
                "DeadLetterQueue": {"sqs:sendmessage"},
                "OrderedQueue": {
                    "sqs:sendmessage",
                    "sqs:receivemessage",
                    "sqs:deletemessage",
                    "sqs:getqueueattributes",
                    "sqs:changemessagevisibility",
                },
            },
        )
        # SAM attaches AWSLambdaSQSQueueExecutionRole (SQS actions on every queue) to the
        # role it generates for a function with an SQS event, so deliver needs its own role.
        role = self.props("DeliverFunction").get("Role")
        self.assertIsNotNone(role, "DeliverFunction needs an explicit role")
        for arn in self.props(referenced_resource(role)).get("ManagedPolicyArns", []):
            text = arn if isinstance(arn, str) else arn.get("Fn::Sub", "")
            self.assertNotRegex(text, r"SQS|DynamoDB|FullAccess", "broad managed policy")

    def test_table_and_queue_actions_name_their_resources(self):
        allowed = {
            "dynamodb:": {"Table"},
            "sqs:": {"EventsQueue", "DeadLetterQueue", "OrderedQueue"},
        }
        seen = 0
        for name in FUNCTIONS:
            for s in self.statements_of_function(name):
                self.assertEqual(s.get("Effect"), "Allow", name)
                acts = [a.lower() for a in actions_of(s)]
                for prefix, targets in allowed.items():
                    if not any(a.startswith(prefix) for a in acts):
                        continue
                    seen += 1
                    self.assertFalse(
                        [a for a in acts if "*" in a], f"{name}: wildcard action {acts}"
                    )
                    resources = resources_of(s)
                    self.assertTrue(resources, f"{name}: statement without Resource")
                    for r in resources:
                        self.assertNotEqual(r, "*", f"{name}: {prefix} on *")
                        self.assertIn(referenced_resource(r), targets, f"{name}: {r}")
        self.assertGreaterEqual(seen, 5)

    def test_index_permissions_are_limited_to_the_tables_indexes(self):
        for name in FUNCTIONS:
            for s in self.statements_of_function(name):
                for r in resources_of(s):
                    if isinstance(r, dict) and "Fn::Sub" in r:
                        self.assertEqual(r["Fn::Sub"], "${Table.Arn}/index/*", name)

    def translated(self):
        """The template as SAM translates it (what CloudFormation deploys)."""
        from samtranslator.translator.transform import transform

        template = copy.deepcopy(self.t)
        for name in FUNCTIONS:
            template["Resources"][name]["Properties"]["CodeUri"] = "s3://bucket/hookline.zip"

        class Policies:
            def load(self):
                names = [
                    "service-role/AWSLambdaBasicExecutionRole",
                    "AWSXrayWriteOnlyAccess",
                    "service-role/AWSLambdaSQSQueueExecutionRole",
                ]
                return {n.split("/")[-1]: "arn:aws:iam::aws:policy/" + n for n in names}

        old = os.environ.get("AWS_DEFAULT_REGION")
        os.environ["AWS_DEFAULT_REGION"] = old or "us-east-1"
        try:
            return transform(template, {}, Policies())
        finally:
            if old is None:
                del os.environ["AWS_DEFAULT_REGION"]

    @unittest.skipUnless(
        __import__("importlib").util.find_spec("samtranslator"), "aws-sam-translator not installed"
    )
    def test_translated_functions_log_to_their_groups_and_name_the_namespace(self):
        out = self.translated()
        functions = {
            k: v for k, v in out["Resources"].items() if v["Type"] == "AWS::Lambda::Function"
        }
        self.assertEqual(set(functions), set(FUNCTIONS))
        for name, f in functions.items():
            p = f["Properties"]
            self.assertEqual(
                p["LoggingConfig"],
                {"LogGroup": {"Ref": name.replace("Function", "LogGroup")}},
                name,
            )
            self.assertEqual(
                p["Environment"]["Variables"]["HOOKLINE_METRICS_NAMESPACE"],
                {"Ref": "MetricsNamespace"},
                name,
            )

    @unittest.skipUnless(
        __import__("importlib").util.find_spec("samtranslator"), "aws-sam-translator not installed"
    )
    def test_translated_roles_grant_no_broad_table_or_queue_access(self):
        """What SAM generates (roles, event-source policies) keeps to the same rule."""
        out = self.translated()
        roles = {k: v for k, v in out["Resources"].items() if v["Type"] == "AWS::IAM::Role"}
        self.assertEqual(len(roles), 3, sorted(roles))
        for role_id, role in roles.items():
            for arn in role["Properties"].get("ManagedPolicyArns", []):
                text = arn if isinstance(arn, str) else str(arn)
                self.assertNotRegex(text, r"SQS|DynamoDB|FullAccess", f"{role_id}: {text}")
            for policy in role["Properties"].get("Policies", []):
                for s in policy["PolicyDocument"]["Statement"]:
                    for a in actions_of(s):
                        if a.lower().startswith(("sqs:", "dynamodb:")):
                            self.assertNotIn("*", resources_of(s), f"{role_id}: {a}")

    # --- metrics, logs, alarms and dashboard ------------------------------------------------

    def alarms(self):
        return [v["Properties"] for v in self.res.values() if v["Type"] == "AWS::CloudWatch::Alarm"]

    def alarm_ids(self):
        return sorted(k for k, v in self.res.items() if v["Type"] == "AWS::CloudWatch::Alarm")

    def single_metric_alarms(self, namespace, metric, dimension):
        """Alarms on one metric (not metric math) that carry the given dimension."""
        return [
            a
            for a in self.alarms()
            if a.get("Namespace") == namespace
            and a.get("MetricName") == metric
            and dimension in a.get("Dimensions", [])
        ]

    def queries(self, logical_id):
        """A metric-math alarm's queries by id, and the id of the one it watches."""
        queries = {q["Id"]: q for q in self.props(logical_id)["Metrics"]}
        watched = [i for i, q in queries.items() if q.get("ReturnData", True)]
        self.assertEqual(len(watched), 1, f"{logical_id}: one query returns data")
        for i, q in queries.items():
            self.assertRegex(i, r"^[a-z][A-Za-z0-9_]*$", f"{logical_id}: id {i}")
            if "Expression" in q:
                for name in re.findall(r"\b[a-z][A-Za-z0-9_]*\b", q["Expression"]):
                    self.assertIn(name, queries, f"{logical_id}: {q['Expression']}")
        return queries, watched[0]

    def evaluate(self, queries, query_id, values):
        """One period of a metric-math alarm: `values` maps metric query ids to their sums (a
        missing id has no data point), as CloudWatch evaluates IF, FILL, SUM and arithmetic."""
        q = queries[query_id]
        if "MetricStat" in q:
            return values.get(query_id)
        return _math(ast.parse(q["Expression"], mode="eval").body, queries, values, self)

    def test_metrics_namespace_reaches_every_function(self):
        ns = self.params["MetricsNamespace"]
        self.assertEqual(ns["Default"], "Hookline")
        pattern = re.compile(ns["AllowedPattern"])
        self.assertRegex(ns["Default"], pattern)
        # The namespace is written into the dashboard's JSON unescaped.
        for bad in ('a"b', "a\\b", "", "x" * 256):
            self.assertIsNone(pattern.match(bad), bad)
        for name in FUNCTIONS:
            self.assertEqual(
                self.function_env(name)["HOOKLINE_METRICS_NAMESPACE"], {"Ref": "MetricsNamespace"}
            )

    def test_each_function_logs_to_its_own_group_with_the_retention_parameter(self):
        retention = self.params["LogRetentionDays"]
        self.assertEqual(int(retention["Default"]), 30)
        # The values CloudWatch Logs accepts for RetentionInDays.
        valid = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827}
        valid |= {2192, 2557, 2922, 3288, 3653}
        self.assertTrue({int(v) for v in retention["AllowedValues"]} <= valid)
        self.assertIn(int(retention["Default"]), {int(v) for v in retention["AllowedValues"]})
        groups = set()
        for name in FUNCTIONS:
            group = referenced_resource(self.props(name)["LoggingConfig"]["LogGroup"])
            self.assertEqual(self.res[group]["Type"], "AWS::Logs::LogGroup", name)
            self.assertEqual(
                self.props(group)["RetentionInDays"], {"Ref": "LogRetentionDays"}, name
            )
            groups.add(group)
        self.assertEqual(len(groups), len(FUNCTIONS), "one log group per function")
        all_groups = {k for k, v in self.res.items() if v["Type"] == "AWS::Logs::LogGroup"}
        self.assertEqual(all_groups, groups)

    def test_every_alarm_notifies_the_optional_topic(self):
        self.assertEqual(self.params["AlarmTopicArn"]["Default"], "")
        self.assertEqual(
            self.t["Conditions"]["HasAlarmTopic"],
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]},
        )
        wiring = {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }
        self.assertEqual(len(self.alarm_ids()), 11, self.alarm_ids())
        for alarm_id in self.alarm_ids():
            a = self.props(alarm_id)
            self.assertEqual(a.get("AlarmActions"), wiring, alarm_id)
            self.assertEqual(a.get("OKActions"), wiring, alarm_id)
            # No traffic is not an incident.
            self.assertEqual(a.get("TreatMissingData"), "notBreaching", alarm_id)

    def test_each_dead_letter_queue_has_a_depth_alarm(self):
        dead_letter_queues = sorted(
            q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            for q in self.res.values()
            if q["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in q.get("Properties", {})
        )
        self.assertEqual(dead_letter_queues, ["DeadLetterQueue", "OrderedDeadLetterQueue"])
        for queue in dead_letter_queues:
            found = self.single_metric_alarms(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}},
            )
            self.assertEqual(len(found), 1, queue)
            a = found[0]
            self.assertEqual(len(a["Dimensions"]), 1)
            self.assertEqual(a["Statistic"], "Maximum")
            self.assertEqual(a["ComparisonOperator"], "GreaterThanThreshold")
            self.assertEqual(float(a["Threshold"]), 0)

    def test_events_queue_age_alarm(self):
        found = self.single_metric_alarms(
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}},
        )
        self.assertEqual(len(found), 1)
        a = found[0]
        self.assertEqual(len(a["Dimensions"]), 1)
        self.assertEqual(a["Statistic"], "Maximum")
        self.assertEqual(a["ComparisonOperator"], "GreaterThanThreshold")
        self.assertEqual(a["Threshold"], {"Ref": "QueueAgeAlarmSeconds"})
        param = self.params["QueueAgeAlarmSeconds"]
        self.assertEqual(int(param["Default"]), 1800)
        # A retry waits on the queue for up to SQS's longest delay, 15 minutes, so a lower
        # threshold would fire on a healthy queue.
        self.assertGreater(int(param["MinValue"]), 900)

    def test_error_and_throttle_alarms_for_each_function(self):
        for metric in ("Errors", "Throttles"):
            for name in FUNCTIONS:
                found = self.single_metric_alarms(
                    "AWS/Lambda", metric, {"Name": "FunctionName", "Value": {"Ref": name}}
                )
                self.assertEqual(len(found), 1, f"{name} {metric}")
                a = found[0]
                self.assertEqual(len(a["Dimensions"]), 1, f"{name} {metric}")
                self.assertEqual(a["Statistic"], "Sum", f"{name} {metric}")
                self.assertEqual(int(a["Period"]), 300, f"{name} {metric}")
                self.assertEqual(a["ComparisonOperator"], "GreaterThanThreshold", name)
                self.assertEqual(float(a["Threshold"]), 0, f"{name} {metric}")

    def test_api_5xx_rate_alarm(self):
        # API Gateway v2 publishes per stage; SAM's HTTP API has only the $default stage.
        self.assertIn(self.props("HttpApi").get("StageName", "$default"), ("$default",))
        queries, watched = self.queries("Api5xxRateAlarm")
        stats = {i: q["MetricStat"] for i, q in queries.items() if "MetricStat" in q}
        self.assertEqual(
            sorted(s["Metric"]["MetricName"] for s in stats.values()), ["5xx", "Count"]
        )
        for i, s in stats.items():
            self.assertEqual(s["Metric"]["Namespace"], "AWS/ApiGateway", i)
            self.assertEqual(
                s["Metric"]["Dimensions"],
                [
                    {"Name": "ApiId", "Value": {"Ref": "HttpApi"}},
                    {"Name": "Stage", "Value": "$default"},
                ],
                i,
            )
            self.assertEqual(s["Stat"], "Sum", i)
            self.assertEqual(int(s["Period"]), 300, i)
        errors = next(i for i, s in stats.items() if s["Metric"]["MetricName"] == "5xx")
        requests = next(i for i, s in stats.items() if s["Metric"]["MetricName"] == "Count")
        a = self.props("Api5xxRateAlarm")
        self.assertEqual(a["Threshold"], {"Ref": "Api5xxAlarmPercent"})
        self.assertEqual(a["ComparisonOperator"], "GreaterThanThreshold")
        self.assertEqual(int(self.params["Api5xxAlarmPercent"]["Default"]), 5)

        def rate(values):
            return self.evaluate(queries, watched, values)

        self.assertEqual(rate({requests: 200, errors: 20}), 10)
        self.assertEqual(rate({requests: 200}), 0)
        # Too few requests to judge.
        self.assertEqual(rate({requests: 4, errors: 4}), 0)
        self.assertIsNone(rate({}))

    def test_delivery_failure_rate_alarm(self):
        queries, watched = self.queries("DeliveryFailureRateAlarm")
        by_outcome = {}
        for i, q in queries.items():
            if "MetricStat" not in q:
                continue
            s = q["MetricStat"]
            # The metrics contract: delivery_attempts, one dimension set, `outcome`.
            self.assertEqual(s["Metric"]["Namespace"], {"Ref": "MetricsNamespace"}, i)
            self.assertEqual(s["Metric"]["MetricName"], "delivery_attempts", i)
            [dim] = s["Metric"]["Dimensions"]
            self.assertEqual(dim["Name"], "outcome", i)
            self.assertIn(dim["Value"], OUTCOMES, i)
            self.assertEqual(s["Stat"], "Sum", i)
            self.assertEqual(int(s["Period"]), 300, i)
            by_outcome[dim["Value"]] = i
        # Every outcome of a request that was made; rate_limited made none.
        self.assertEqual(set(by_outcome), set(OUTCOMES) - {"rate_limited"})
        a = self.props("DeliveryFailureRateAlarm")
        self.assertEqual(a["Threshold"], {"Ref": "DeliveryFailureAlarmPercent"})
        self.assertEqual(a["ComparisonOperator"], "GreaterThanThreshold")
        self.assertEqual(int(a["EvaluationPeriods"]), 2)
        self.assertEqual(int(self.params["DeliveryFailureAlarmPercent"]["Default"]), 25)

        def rate(counts):
            values = {by_outcome[outcome]: n for outcome, n in counts.items()}
            return self.evaluate(queries, watched, values)

        self.assertEqual(rate({"2xx": 90, "5xx": 10}), 10)
        every_failure = {"4xx": 10, "5xx": 20, "timeout": 10, "connect": 10, "tls": 10}
        self.assertEqual(rate({"2xx": 30, "url_policy": 10, **every_failure}), 70)
        self.assertEqual(rate({"5xx": 25}), 100)
        self.assertEqual(rate({"2xx": 100}), 0)
        # Too few attempts to judge.
        self.assertEqual(rate({"timeout": 5}), 0)
        self.assertIsNone(rate({}))

    def dashboard_body(self):
        """The dashboard's JSON with each ${...} replaced by its own name, and those names."""
        dashboards = [k for k, v in self.res.items() if v["Type"] == "AWS::CloudWatch::Dashboard"]
        self.assertEqual(len(dashboards), 1)
        body = self.props(dashboards[0])["DashboardBody"]
        self.assertIsInstance(body, dict)
        text = body["Fn::Sub"]
        self.assertIsInstance(text, str, "DashboardBody: !Sub of one string")
        names = set(re.findall(r"\$\{([^}]*)\}", text))
        return json.loads(re.sub(r"\$\{([^}]*)\}", r"<\1>", text)), names

    def test_dashboard_name_is_unique_to_the_stack_and_region(self):
        # Dashboard names are global to an account.
        [dashboard] = [
            v["Properties"] for v in self.res.values() if v["Type"] == "AWS::CloudWatch::Dashboard"
        ]
        name = dashboard["DashboardName"]["Fn::Sub"]
        self.assertIn("${AWS::StackName}", name)
        self.assertIn("${AWS::Region}", name)

    def test_dashboard_references_real_resources(self):
        _, names = self.dashboard_body()
        attributes = {
            "AWS::CloudWatch::Alarm": {"Arn"},
            "AWS::SQS::Queue": {"QueueName", "Arn"},
        }
        for name in names:
            if name.startswith("AWS::"):
                self.assertIn(name, ("AWS::Region", "AWS::StackName"), name)
            elif "." in name:
                resource, attribute = name.split(".", 1)
                self.assertIn(resource, self.res, name)
                self.assertIn(attribute, attributes.get(self.res[resource]["Type"], set()), name)
            else:
                self.assertTrue(name in self.res or name in self.params, name)

    def dashboard_metrics(self):
        """(widget title, namespace, metric name, dimensions, options) of each metric row."""
        body, _ = self.dashboard_body()
        rows = []
        for w in body["widgets"]:
            self.assertLessEqual(w["x"] + w["width"], 24, w)
            if w["type"] != "metric":
                continue
            p = w["properties"]
            self.assertEqual(p["region"], "<AWS::Region>", p["title"])
            ids = set()
            for row in p["metrics"]:
                options = row[-1] if isinstance(row[-1], dict) else {}
                if "id" in options:
                    ids.add(options["id"])
            for row in p["metrics"]:
                options = row[-1] if isinstance(row[-1], dict) else {}
                if "expression" in options:
                    self.assertEqual(len(row), 1, row)
                    for ref in re.findall(r"\b[a-z][A-Za-z0-9_]*\b", options["expression"]):
                        self.assertIn(ref, ids, options["expression"])
                    continue
                fields = row[:-1] if options else row
                namespace, metric, *pairs = fields
                self.assertEqual(len(pairs) % 2, 0, row)
                dims = dict(zip(pairs[::2], pairs[1::2]))
                rows.append((p["title"], namespace, metric, dims, options))
        return body, rows

    def test_dashboard_metrics_use_the_contract_and_the_stacks_resources(self):
        _, rows = self.dashboard_metrics()
        kinds = {
            "FunctionName": "AWS::Serverless::Function",
            "QueueName": "AWS::SQS::Queue",
            "ApiId": "AWS::Serverless::HttpApi",
        }
        for title, namespace, metric, dims, _ in rows:
            if namespace == "<MetricsNamespace>":
                self.assertIn(metric, CONTRACT_LABELS, title)
                self.assertEqual(set(dims), CONTRACT_LABELS[metric], f"{title}: {metric}")
                continue
            self.assertIn(namespace, ("AWS/SQS", "AWS/Lambda", "AWS/ApiGateway"), title)
            for key, value in dims.items():
                if key == "Stage":
                    self.assertEqual(value, "$default", title)
                    continue
                resource = re.fullmatch(r"<(\w+)(\.QueueName)?>", value)
                self.assertIsNotNone(resource, f"{title}: {key}={value}")
                self.assertEqual(self.res[resource.group(1)]["Type"], kinds[key], title)

    def test_dashboard_shows_what_an_operator_watches(self):
        body, rows = self.dashboard_metrics()

        def stats(metric, **dims):
            return {
                o.get("stat")
                for _, n, m, d, o in rows
                if m == metric
                and n in ("<MetricsNamespace>", "AWS/SQS", "AWS/Lambda")
                and d == dims
            }

        # Delivery rate and every outcome of an attempt.
        for outcome in OUTCOMES:
            self.assertTrue(stats("delivery_attempts", outcome=outcome), outcome)
        # Latency percentiles.
        self.assertLessEqual({"p50", "p90", "p99"}, stats("attempt_duration", outcome="2xx"))
        self.assertLessEqual({"p50", "p90", "p99"}, stats("delivery_latency"))
        # Queue age and dead letters.
        self.assertTrue(stats("ApproximateAgeOfOldestMessage", QueueName="<EventsQueue.QueueName>"))
        self.assertTrue(
            stats("ApproximateNumberOfMessagesVisible", QueueName="<DeadLetterQueue.QueueName>")
        )
        # Each function's duration.
        for name in FUNCTIONS:
            self.assertLessEqual({"p50", "p99"}, stats("Duration", FunctionName=f"<{name}>"), name)
        # And every alarm's state.
        alarm_widgets = [w for w in body["widgets"] if w["type"] == "alarm"]
        self.assertEqual(len(alarm_widgets), 1)
        self.assertEqual(
            sorted(alarm_widgets[0]["properties"]["alarms"]),
            sorted(f"<{a}.Arn>" for a in self.alarm_ids()),
        )

    def test_outputs(self):
        out = self.t["Outputs"]
        self.assertEqual(
            out["ApiUrl"]["Value"],
            {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"},
        )
        self.assertEqual(out["EventsQueueUrl"]["Value"], {"Ref": "EventsQueue"})
        self.assertEqual(out["OrderedQueueUrl"]["Value"], {"Ref": "OrderedQueue"})
        self.assertEqual(out["DeadLetterQueueUrl"]["Value"], {"Ref": "DeadLetterQueue"})
        self.assertEqual(out["TableName"]["Value"], {"Ref": "Table"})

    def test_no_literal_region_account_partition_or_endpoint(self):
        region = re.compile(r"\b(us|eu|ap|sa|ca|me|af|il|mx|cn)(-gov)?-[a-z]+-\d\b")
        account = re.compile(r"(?<![\d.])\d{12}(?![\d.])")

        def walk(node, path):
            if isinstance(node, dict):
                for k, v in node.items():
                    yield from walk(v, path + [str(k)])
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    yield from walk(v, path + [str(i)])
            elif isinstance(node, str):
                yield path, node

        for path, text in walk(self.t, []):
            where = "/".join(path)
            self.assertIsNone(region.search(text), f"{where}: literal region in {text!r}")
            self.assertIsNone(account.search(text), f"{where}: literal account in {text!r}")
            self.assertNotIn("arn:aws:", text, f"{where}: use ${{AWS::Partition}}")
            if "amazonaws.com" in text:
                # Only service principals (lambda.amazonaws.com) may name the domain.
                self.assertIn("Principal", path, f"{where}: literal endpoint {text!r}")


if __name__ == "__main__":
    unittest.main()

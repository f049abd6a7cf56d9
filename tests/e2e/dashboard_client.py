#!/usr/bin/python3
"""A dashboard of a ptrain job in another language, for tests/e2e/coordinator_test.sh.

It does not use ptrain's .proto: it asks the coordinator's server reflection for the services
and for the file descriptors of ptrain.v1.Coordinator (with their dependencies), builds the
message classes from them (descriptor_pool + message_factory) and calls the unary methods with
grpc's generic channel.unary_unary(path, serializer, deserializer). Every call has a deadline;
--token / --token-file add `authorization: Bearer <token>`, --ca (and --cert/--key) use TLS.

  dashboard_client.py [OPTIONS] services ADDR
  dashboard_client.py [OPTIONS] call ADDR METHOD [JSON] [--expect CODE] [--out FILE]
  dashboard_client.py [OPTIONS] poll ADDR (--until-state S | --min-step N) --timeout S
                                          [--record FILE] [--interval S] [--job-pid PID]
  dashboard_client.py [OPTIONS] health ADDR [--expect CODE]
  dashboard_client.py [OPTIONS] raw ADDR METHOD HEX --expect CODE[,CODE...]
  dashboard_client.py [OPTIONS] check-auth ADDR TOKEN
  dashboard_client.py [OPTIONS] check-tls ADDR          (with --ca)
  dashboard_client.py [OPTIONS] check-mtls-refused ADDR
  dashboard_client.py [OPTIONS] check-bounds ADDR
  dashboard_client.py [OPTIONS] scrape ADDR URL --out FILE
  dashboard_client.py metrics-port LOGFILE --timeout S

Exit codes: 0 the check held (or the call answered as expected); 1 it did not, or the reflection
answer was unusable (the reason on stderr); 2 bad arguments; 3 the coordinator could not be
reached (UNAVAILABLE or DEADLINE_EXCEEDED) outside the calls a check expects to fail.
The reflection proto is compiled at test time into $DASHBOARD_PROTO_DIR (reflection_pb2.py).
"""
import argparse
import json
import os
import random
import re
import sys
import time
import warnings

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

sys.path.insert(0, os.environ.get("DASHBOARD_PROTO_DIR", "."))
import reflection_pb2  # noqa: E402  (generated from grpc_reflection/reflection.proto)

SERVICE = "ptrain.v1.Coordinator"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
TERMINAL = ("FINISHED", "FAILED")


class CheckFailed(Exception):
    pass


def code_name(error):
    code = error.code() if isinstance(error, grpc.RpcError) else error
    return code.name if code is not None else "UNKNOWN"


# ---------------------------------------------------------------- connection


def make_channel(args, address):
    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=open(args.ca, "rb").read(),
            private_key=open(args.key, "rb").read() if args.key else None,
            certificate_chain=open(args.cert, "rb").read() if args.cert else None,
        )
        return grpc.secure_channel(address, creds)
    return grpc.insecure_channel(address)


def token_metadata(args):
    token = args.token
    if args.token_file:
        token = open(args.token_file).readline().strip()
    return [("authorization", "Bearer " + token)] if token else []


# ---------------------------------------------------------------- reflection


def reflect(channel, deadline):
    """(service names, {method name: (input class, output class)}) from the server's reflection."""
    stream = channel.stream_stream(
        REFLECTION,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ]
    services, files = [], {}
    for response in stream(iter(requests), timeout=deadline):
        kind = response.WhichOneof("message_response")
        if kind == "error_response":
            raise CheckFailed(
                f"reflection error {response.error_response.error_code}: "
                f"{response.error_response.error_message}"
            )
        if kind == "list_services_response":
            services = [s.name for s in response.list_services_response.service]
        elif kind == "file_descriptor_response":
            for blob in response.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
                files[proto.name] = proto
    if SERVICE not in services:
        raise CheckFailed(f"reflection lists no {SERVICE} (it lists {services})")
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):  # dependencies first
        if name in added:
            return
        if name not in files:
            raise CheckFailed(f"reflection did not send {name}, a dependency")
        for dependency in files[name].dependency:
            add(dependency)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    service = pool.FindServiceByName(SERVICE)
    factory = message_factory.MessageFactory(pool)

    def message_class(descriptor):
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return factory.GetPrototype(descriptor)

    methods = {}
    for method in service.methods:
        methods[method.name] = (
            message_class(method.input_type),
            message_class(method.output_type),
            method.server_streaming,
        )
    return services, methods


class Dashboard:
    def __init__(self, args, address):
        self.args = args
        self.address = address
        self.channel = make_channel(args, address)
        self.metadata = token_metadata(args)
        self.services, self.methods = reflect(self.channel, args.deadline)

    def call(self, method, request=None, metadata=None):
        """The method's response message; grpc.RpcError when it fails."""
        request_class, response_class, streaming = self.methods[method]
        if streaming:
            raise CheckFailed(f"{method} is a streaming method")
        stub = self.channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        if request is None:
            request = request_class()
        elif isinstance(request, dict):
            request = json_format.ParseDict(request, request_class())
        return stub(
            request,
            timeout=self.args.deadline,
            metadata=self.metadata if metadata is None else metadata,
        )

    def call_raw(self, method, body, metadata=None):
        """Sends `body` (bytes) as the request, as it is; the response's bytes."""
        stub = self.channel.unary_unary(f"/{SERVICE}/{method}")  # no serializers: raw bytes
        return stub(
            body,
            timeout=self.args.deadline,
            metadata=self.metadata if metadata is None else metadata,
        )

    def status(self):
        return to_dict(self.call("GetJobStatus"))


def to_dict(message):
    return json_format.MessageToDict(
        message, including_default_value_fields=True, preserving_proto_field_name=True
    )


def health(channel, deadline):
    """The raw answer of grpc.health.v1.Health/Check for the whole server (no token sent)."""
    check = channel.unary_unary(HEALTH_CHECK)
    return check(b"", timeout=deadline)


def expect_code(what, thunk, expected):
    """Runs `thunk`; CheckFailed unless it ends with one of the `expected` code names."""
    try:
        thunk()
        got, detail = "OK", ""
    except grpc.RpcError as e:
        got, detail = code_name(e), e.details()
    if got not in expected:
        raise CheckFailed(f"{what}: expected {'/'.join(expected)}, got {got} ({detail})")
    print(f"ok: {what}: {got}" + (f" ({detail})" if detail else ""))
    return got


# ---------------------------------------------------------------- commands


def cmd_services(args):
    d = Dashboard(args, args.address)
    print(json.dumps({"services": d.services, "methods": sorted(d.methods)}))


def cmd_call(args):
    d = Dashboard(args, args.address)
    if args.method not in d.methods:
        raise CheckFailed(f"reflection shows no method {args.method} (it has {sorted(d.methods)})")
    request = json.loads(args.json) if args.json else {}
    try:
        response = to_dict(d.call(args.method, request))
        got = "OK"
    except grpc.RpcError as e:
        response, got = None, code_name(e)
        print(f"{args.method}: {got}: {e.details()}", file=sys.stderr)
    if got != args.expect:
        raise CheckFailed(f"{args.method}: expected {args.expect}, got {got}")
    if response is not None:
        text = json.dumps(response, sort_keys=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        else:
            print(text)


def cmd_poll(args):
    """Polls GetJobStatus until the state (or step) is reached or the timeout passes.

    UNAVAILABLE is tolerated (a coordinator starting or restarting) and counted; any other
    failure ends the poll. The record: the distinct steps seen (in order), the states seen, and
    the last status."""
    d = Dashboard(args, args.address)
    deadline = time.monotonic() + args.timeout
    steps, states, unavailable, last = [], [], 0, None
    reached, job_ended = False, None
    while time.monotonic() < deadline:
        if args.job_pid and job_ended is None and not alive(args.job_pid):
            # What the job reports reaches the coordinator before it exits: a short grace.
            job_ended = time.monotonic()
            deadline = min(deadline, job_ended + 3)
        try:
            last = d.status()
        except grpc.RpcError as e:
            if code_name(e) != "UNAVAILABLE":
                raise CheckFailed(f"GetJobStatus: {code_name(e)}: {e.details()}")
            unavailable += 1
            time.sleep(args.interval)
            continue
        step = int(last["step"])
        if not steps or steps[-1] != step:
            steps.append(step)
        if not states or states[-1] != last["state"]:
            states.append(last["state"])
        if args.until_state and last["state"] == args.until_state:
            reached = True
            break
        if args.min_step is not None and step >= args.min_step:
            reached = True
            break
        if args.until_state and last["state"] in TERMINAL:
            break  # the other end: it will not change any more
        time.sleep(args.interval)
    record = {
        "steps": steps,
        "states": states,
        "unavailable": unavailable,
        "reached": reached,
        "last": last,
    }
    if args.record:
        with open(args.record, "w") as f:
            json.dump(record, f)
    if not reached:
        want = args.until_state or f"step >= {args.min_step}"
        if args.until_state and last and last["state"] in TERMINAL:
            within = f"(it ended {last['state']})"
        elif job_ended:
            within = f"before its process {args.job_pid} ended"
        else:
            within = f"within {args.timeout} s"
        raise CheckFailed(
            f"the job did not reach {want} {within}: states {states}, "
            f"steps {steps[-10:]}, last state {last and last['state']}"
        )
    print(f"reached {args.until_state or args.min_step}: step {last['step']}, {len(steps)} steps seen")


def alive(pid):
    """Whether process `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmd_health(args):
    channel = make_channel(args, args.address)
    expect_code("health check", lambda: check_serving(channel, args.deadline), [args.expect])


def check_serving(channel, deadline):
    answer = health(channel, deadline)
    if answer != b"\x08\x01":  # HealthCheckResponse{status: SERVING}
        raise CheckFailed(f"the health check answered {answer!r}, not SERVING (b'\\x08\\x01')")


def cmd_raw(args):
    d = Dashboard(args, args.address)
    body = bytes.fromhex(args.hex)
    expect_code(f"{args.method} with body {args.hex}", lambda: d.call_raw(args.method, body),
                args.expect.split(","))


def cmd_check_auth(args):
    """On a coordinator that needs TOKEN: no token and a wrong one are UNAUTHENTICATED (for a
    dashboard read and for a command, which then must not be queued), the right one works, the
    health check needs none."""
    args.token, args.token_file = None, None
    d = Dashboard(args, args.address)  # reflection needs no token
    right = [("authorization", "Bearer " + args.secret)]
    wrong = [("authorization", "Bearer " + args.secret + "x")]
    expect_code("GetJobStatus without a token", lambda: d.call("GetJobStatus", metadata=[]),
                ["UNAUTHENTICATED"])
    expect_code("GetJobStatus with a wrong token", lambda: d.call("GetJobStatus", metadata=wrong),
                ["UNAUTHENTICATED"])
    expect_code("GetJobStatus with the token but no 'Bearer '",
                lambda: d.call("GetJobStatus", metadata=[("authorization", args.secret)]),
                ["UNAUTHENTICATED"])
    expect_code("RequestStop without a token",
                lambda: d.call("RequestStop", {"reason": "intruder"}, metadata=[]),
                ["UNAUTHENTICATED"])
    expect_code("RequestStop with a wrong token",
                lambda: d.call("RequestStop", {"reason": "intruder"}, metadata=wrong),
                ["UNAUTHENTICATED"])
    expect_code("RegisterRank with a wrong token",
                lambda: d.call("RegisterRank", {"job_id": "intruder", "launch_id": "x", "rank": 0,
                                                "world": 1}, metadata=wrong),
                ["UNAUTHENTICATED"])
    status = {}
    expect_code("GetJobStatus with the token",
                lambda: status.update(to_dict(d.call("GetJobStatus", metadata=right))), ["OK"])
    if status.get("pending_commands"):
        raise CheckFailed(f"refused RequestStop calls were queued: {status['pending_commands']}")
    if status.get("job_id"):
        raise CheckFailed(f"a refused RegisterRank set the job: {status['job_id']}")
    expect_code("the health check without a token", lambda: check_serving(d.channel, args.deadline),
                ["OK"])


def cmd_check_tls(args):
    """On a TLS coordinator (args.ca set): the call works over TLS; plaintext to the same port
    fails with UNAVAILABLE within the deadline (no hang); over TLS it still works after."""
    d = Dashboard(args, args.address)
    expect_code("GetJobStatus over TLS", lambda: d.call("GetJobStatus"), ["OK"])
    plain = grpc.insecure_channel(args.address)
    started = time.monotonic()
    expect_code("the health check in plaintext to the TLS port",
                lambda: health(plain, args.deadline), ["UNAVAILABLE"])
    took = time.monotonic() - started
    if took >= args.deadline:
        raise CheckFailed(f"plaintext took {took:.1f} s: it ran into the deadline (a hang)")
    plain.close()
    expect_code("GetJobStatus over TLS after the plaintext try", lambda: d.call("GetJobStatus"),
                ["OK"])
    expect_code("the health check over TLS", lambda: check_serving(d.channel, args.deadline), ["OK"])


def cmd_check_mtls_refused(args):
    """A TLS client the coordinator must refuse (no client certificate, or one from another CA,
    on an mTLS coordinator; or trusting another CA): UNAVAILABLE, as the handshake fails, within
    the deadline."""
    channel = make_channel(args, args.address)
    started = time.monotonic()
    expect_code("the health check (the handshake must fail)",
                lambda: health(channel, args.deadline), ["UNAVAILABLE"])
    if time.monotonic() - started >= args.deadline:
        raise CheckFailed("the refused handshake ran into the deadline (a hang)")


# Malformed bodies that no protobuf parser accepts (hex): a length-delimited field longer than the
# body, tag 0, wire type 7, a varint of 11 bytes, a field 1 (an int32 in GetJobStatusRequest) of
# wire type 2 cut short.
MALFORMED = ["1210616263", "0001", "0f", "08ffffffffffffffffffff01", "0a05ff"]


def cmd_check_bounds(args):
    """Malformed and oversized requests and requests past the service's bounds are refused, and
    change nothing: on a fresh coordinator (no job yet) the status stays empty and the service
    answers after all of it."""
    d = Dashboard(args, args.address)
    before = d.status()
    if before["job_id"] or before["attempts"]:
        raise CheckFailed(f"check-bounds needs a fresh coordinator; it has {before['job_id']!r}")
    parse_failure = ["INTERNAL", "INVALID_ARGUMENT"]
    for method in ("GetJobStatus", "RegisterRank", "Heartbeat"):
        for hex_body in MALFORMED:
            expect_code(f"{method} with the malformed body {hex_body}",
                        lambda: d.call_raw(method, bytes.fromhex(hex_body)), parse_failure)
    # Invalid UTF-8 in a proto3 string field (RegisterRankRequest.job_id): a parse failure too.
    expect_code("RegisterRank with a job_id of invalid UTF-8",
                lambda: d.call_raw("RegisterRank", b"\x0a\x02\xc3\x28"), parse_failure)
    # Seeded random bodies that the Python parser rejects as well.
    rng = random.Random(14)
    request_class = d.methods["RegisterRank"][0]
    tried = 0
    while tried < 20:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                request_class.FromString(body)
            continue  # parses: not malformed
        except Exception:
            pass
        tried += 1
        expect_code(f"RegisterRank with the random body {body.hex()}",
                    lambda: d.call_raw("RegisterRank", body), parse_failure)
    register = {"job_id": "bounds", "launch_id": "l1", "rank": 0, "world": 2, "host": "h"}
    expect_code("RegisterRank with a 2 MiB job_id",
                lambda: d.call("RegisterRank", dict(register, job_id="j" * (2 << 20))),
                ["RESOURCE_EXHAUSTED"])
    expect_code("RegisterRank with a 5 KiB host",
                lambda: d.call("RegisterRank", dict(register, host="h" * 5120)), ["INVALID_ARGUMENT"])
    expect_code("RegisterRank with a 257-byte job_id",
                lambda: d.call("RegisterRank", dict(register, job_id="j" * 257)), ["INVALID_ARGUMENT"])
    expect_code("RequestStop with a 5 KiB reason",
                lambda: d.call("RequestStop", {"reason": "r" * 5120}), ["INVALID_ARGUMENT"])
    expect_code("RegisterRank of rank 2 in a world of 2",
                lambda: d.call("RegisterRank", dict(register, rank=2)), ["INVALID_ARGUMENT"])
    expect_code("RegisterRank of rank -1",
                lambda: d.call("RegisterRank", dict(register, rank=-1)), ["INVALID_ARGUMENT"])
    expect_code("RegisterRank with world 0",
                lambda: d.call("RegisterRank", dict(register, rank=0, world=0)), ["INVALID_ARGUMENT"])
    after = d.status()
    for key in ("job_id", "attempts", "pending_commands", "world", "step"):
        if after[key] != before[key]:
            raise CheckFailed(f"refused requests changed the status: {key} {before[key]!r} -> "
                              f"{after[key]!r}")
    # A real attempt, then a heartbeat from a rank outside its world.
    expect_code("RegisterRank of rank 0 in a world of 2", lambda: d.call("RegisterRank", register),
                ["OK"])
    heartbeat = {"job_id": "bounds", "attempt": 1, "rank": 2, "step": 1}
    expect_code("Heartbeat of rank 2 in attempt 1 of 2 ranks",
                lambda: d.call("Heartbeat", heartbeat), ["INVALID_ARGUMENT"])
    expect_code("Heartbeat of another job",
                lambda: d.call("Heartbeat", dict(heartbeat, job_id="other", rank=0)),
                ["FAILED_PRECONDITION"])
    expect_code("Heartbeat of an attempt never opened",
                lambda: d.call("Heartbeat", dict(heartbeat, attempt=7, rank=0)), ["NOT_FOUND"])
    final = {}
    expect_code("GetJobStatus after all of that", lambda: final.update(d.status()), ["OK"])
    if final["job_id"] != "bounds" or final["world"] != 2 or len(final["attempts"]) != 1:
        raise CheckFailed(f"the one good registration is not what the status shows: {final}")
    expect_code("the health check after all of that",
                lambda: check_serving(d.channel, args.deadline), ["OK"])


def cmd_scrape(args):
    """GetJobStatus, then the Prometheus text at URL, then GetJobStatus again, as one JSON object
    {before, text, after}: the scrape lies between the two statuses."""
    import urllib.request
    d = Dashboard(args, args.address)
    before = d.status()
    with urllib.request.urlopen(args.url, timeout=args.deadline) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    after = d.status()
    with open(args.out, "w") as f:
        json.dump({"before": before, "content_type": content_type, "text": text, "after": after}, f)


def cmd_metrics_port(args):
    """The port of 'Prometheus metrics at http://HOST:PORT/metrics' in a log, once it is there."""
    pattern = re.compile(r"Prometheus metrics at http://([^/\s]+)/metrics")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if os.path.exists(args.log):
            found = pattern.search(open(args.log, errors="replace").read())
            if found:
                print(found.group(1))
                return
        time.sleep(0.1)
    raise CheckFailed(f"{args.log} names no metrics address within {args.timeout} s")


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", help="bearer token")
    parser.add_argument("--token-file", help="file whose first line is the bearer token")
    parser.add_argument("--ca", help="PEM CA to trust: TLS")
    parser.add_argument("--cert", help="PEM client certificate (mTLS)")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument("--deadline", type=float, default=5.0, help="seconds for each call")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("services")
    p.add_argument("address")
    p.set_defaults(run=cmd_services)

    p = sub.add_parser("call")
    p.add_argument("address")
    p.add_argument("method")
    p.add_argument("json", nargs="?")
    p.add_argument("--expect", default="OK", help="the status code name the call must end with")
    p.add_argument("--out", help="write the response's JSON here instead of stdout")
    p.set_defaults(run=cmd_call)

    p = sub.add_parser("poll")
    p.add_argument("address")
    p.add_argument("--until-state")
    p.add_argument("--min-step", type=int)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--record")
    p.add_argument("--job-pid", type=int, help="stop waiting 3 s after this process ended")
    p.set_defaults(run=cmd_poll)

    p = sub.add_parser("health")
    p.add_argument("address")
    p.add_argument("--expect", default="OK")
    p.set_defaults(run=cmd_health)

    p = sub.add_parser("raw")
    p.add_argument("address")
    p.add_argument("method")
    p.add_argument("hex")
    p.add_argument("--expect", required=True)
    p.set_defaults(run=cmd_raw)

    p = sub.add_parser("check-auth")
    p.add_argument("address")
    p.add_argument("secret")
    p.set_defaults(run=cmd_check_auth)

    p = sub.add_parser("check-tls")
    p.add_argument("address")
    p.set_defaults(run=cmd_check_tls)

    p = sub.add_parser("check-mtls-refused")
    p.add_argument("address")
    p.set_defaults(run=cmd_check_mtls_refused)

    p = sub.add_parser("check-bounds")
    p.add_argument("address")
    p.set_defaults(run=cmd_check_bounds)

    p = sub.add_parser("scrape")
    p.add_argument("address")
    p.add_argument("url")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_scrape)

    p = sub.add_parser("metrics-port")
    p.add_argument("log")
    p.add_argument("--timeout", type=float, required=True)
    p.set_defaults(run=cmd_metrics_port)

    args = parser.parse_args()
    if args.command == "poll" and (args.until_state is None) == (args.min_step is None):
        parser.error("poll needs exactly one of --until-state and --min-step")
    try:
        args.run(args)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        # Only the reflection and the dashboards' unexpected calls get here.
        print(f"rpc error: {code_name(e)}: {e.details()}", file=sys.stderr)
        sys.exit(3 if code_name(e) in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else 1)


if __name__ == "__main__":
    main()

"""A gRPC client for tests/grpc.rs, on grpcio and grpcio-health-checking.

Usage: grpc_client.py ADDRESS COMMAND [ARGS...]; prints one JSON object per
call: {"code": "OK"|"INTERNAL"|..., "details": ..., "reply": hex}.

The users.v1 messages are encoded here by hand (a string field 1, varints):
the client is grpcio's own channel and framing, only the few message bytes
are ours, so that no protoc or grpcio-tools is needed.
"""
import json
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_string(tag, s):
    b = s.encode()
    return varint(tag << 3 | 2) + varint(len(b)) + b


def field_uint(tag, n):
    return varint(tag << 3) + varint(n)


def report(code, details=None, reply=b"", **extra):
    print(json.dumps({"code": code, "details": details, "reply": reply.hex(), **extra}), flush=True)


def unary(channel, method, payload, timeout=None):
    call = channel.unary_unary(
        "/users.v1.Users/" + method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        reply = call(payload, timeout=timeout)
        report("OK", reply=reply)
    except grpc.RpcError as e:
        # A Trailers-Only answer's headers are the trailing metadata.
        metadata = dict((e.initial_metadata() or ())) | dict((e.trailing_metadata() or ()))
        report(e.code().name, e.details(), metadata=metadata)


def main():
    address, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    with grpc.insecure_channel(address) as channel:
        if command == "get-user":
            unary(channel, "GetUser", field_string(1, args[0]))
        elif command == "fail":
            unary(channel, "Fail", b"")
        elif command == "panic":
            unary(channel, "Panic", b"")
        elif command == "nope":
            unary(channel, "Nope", b"")
        elif command == "sleep":
            # sleep MILLIS [DEADLINE_SECONDS]
            timeout = float(args[1]) if len(args) > 1 else None
            unary(channel, "Sleep", field_uint(1, int(args[0])), timeout)
        elif command == "cancel-stream":
            # Reads one streamed user, then cancels the call mid-stream.
            call = channel.unary_stream(
                "/users.v1.Users/ListUsers",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )(field_uint(1, 100) + field_uint(2, 200))
            first = next(call)
            call.cancel()
            try:
                for _ in call:
                    pass
                report("OK", reply=first)
            except grpc.RpcError as e:
                report(e.code().name, e.details(), reply=first)
        elif command == "health-check":
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=args[0] if args else ""), timeout=5)
                report("OK", status=health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
            except grpc.RpcError as e:
                report(e.code().name, e.details())
        elif command == "health-watch":
            # Prints each status the Watch stream sends, until NOT_SERVING or
            # the timeout (seconds).
            stub = health_pb2_grpc.HealthStub(channel)
            stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=float(args[0]))
            try:
                for r in stream:
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                    report("OK", status=name)
                    if name == "NOT_SERVING":
                        stream.cancel()
                        break
            except grpc.RpcError as e:
                report(e.code().name, e.details())
        else:
            sys.exit("unknown command " + command)


if __name__ == "__main__":
    main()

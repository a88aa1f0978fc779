"""A standard gRPC client, as an operator's tools use the coordinator.

    grpc_probe.py health ADDR [SERVICE]   prints SERVING / NOT_SERVING / ... (exit 0), or the
                                          gRPC error code (exit 3)
    grpc_probe.py services ADDR           prints the services server reflection lists
"""
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2


def health(addr, service=""):
    with grpc.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as e:
            print(e.code().name)
            return 3
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
        return 0


def services(addr):
    # grpc.reflection.v1 has the same messages as v1alpha; ask the v1 service by name.
    with grpc.insecure_channel(addr) as ch:
        call = ch.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        for r in call(iter([req]), timeout=5):
            for s in r.list_services_response.service:
                print(s.name)
    return 0


if __name__ == "__main__":
    cmd, addr = sys.argv[1], sys.argv[2]
    if cmd == "health":
        sys.exit(health(addr, sys.argv[3] if len(sys.argv) > 3 else ""))
    if cmd == "services":
        sys.exit(services(addr))
    sys.exit(f"unknown command {cmd}")

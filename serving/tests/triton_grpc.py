#!/usr/bin/env python3
"""Checks the V2 gRPC service with NVIDIA's own client, tritonclient[grpc].

Usage: triton_grpc.py HOST:PORT   (a gateway or model server serving testdata/add_mul.onnx
as model "add_mul"). Run by tests/grpc.rs when `import tritonclient.grpc` works.
"""

import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url = sys.argv[1]
client = grpcclient.InferenceServerClient(url=url)
assert client.is_server_live(), "server not live"
assert client.is_server_ready(), "server not ready"
assert client.is_model_ready("add_mul"), "model not ready"

server = client.get_server_metadata(as_json=True)
assert server["name"].startswith("gpuctl-"), server

meta = client.get_model_metadata("add_mul", as_json=True)
assert meta["name"] == "add_mul", meta
assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
    ("a", "FP32", ["-1", "4"]),
    ("b", "FP32", ["-1", "4"]),
], meta

a = np.arange(8, dtype=np.float32).reshape(2, 4)
b = np.full((2, 4), 2.0, dtype=np.float32)
inputs = [grpcclient.InferInput("a", [2, 4], "FP32"), grpcclient.InferInput("b", [2, 4], "FP32")]
inputs[0].set_data_from_numpy(a)
inputs[1].set_data_from_numpy(b)
outputs = [grpcclient.InferRequestedOutput("sum"), grpcclient.InferRequestedOutput("product")]
result = client.infer("add_mul", inputs, outputs=outputs, request_id="grpc-1")
np.testing.assert_allclose(result.as_numpy("sum"), a + b)
np.testing.assert_allclose(result.as_numpy("product"), a * b)
assert result.get_response().id == "grpc-1"

# All outputs when none is named.
result = client.infer("add_mul", inputs)
np.testing.assert_allclose(result.as_numpy("product"), a * b)

# A bad request surfaces as an exception carrying the server's message.
try:
    client.infer("add_mul", inputs[:1])
    raise SystemExit("expected an error for the missing input")
except InferenceServerException as e:
    assert "missing input b" in str(e), str(e)
    assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
print("tritonclient[grpc]: ok")

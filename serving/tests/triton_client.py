#!/usr/bin/env python3
"""Checks gpu-model-server with NVIDIA's own client, tritonclient[http]: JSON and binary tensors.

Usage: triton_client.py HOST:PORT   (serving testdata/add_mul.onnx as model "add_mul")
Run by tests/triton_client.rs when `import tritonclient.http` works.
"""

import sys

import numpy as np
import tritonclient.http as httpclient

url = sys.argv[1]
client = httpclient.InferenceServerClient(url=url)
assert client.is_server_live(), "server not live"
assert client.is_server_ready(), "server not ready"
assert client.is_model_ready("add_mul"), "model not ready"

server = client.get_server_metadata()
assert server["name"], server
assert "binary_tensor_data" in server["extensions"], server

meta = client.get_model_metadata("add_mul")
assert meta["name"] == "add_mul", meta
assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
    ("a", "FP32", [-1, 4]),
    ("b", "FP32", [-1, 4]),
], meta
assert [o["name"] for o in meta["outputs"]] == ["sum", "product"], meta

a = np.arange(8, dtype=np.float32).reshape(2, 4)
b = np.full((2, 4), 2.0, dtype=np.float32)
inputs = [httpclient.InferInput("a", [2, 4], "FP32"), httpclient.InferInput("b", [2, 4], "FP32")]
inputs[0].set_data_from_numpy(a, binary_data=False)
inputs[1].set_data_from_numpy(b, binary_data=False)
outputs = [
    httpclient.InferRequestedOutput("sum", binary_data=False),
    httpclient.InferRequestedOutput("product", binary_data=False),
]
result = client.infer("add_mul", inputs, outputs=outputs, request_id="triton-1")
np.testing.assert_allclose(result.as_numpy("sum"), a + b)
np.testing.assert_allclose(result.as_numpy("product"), a * b)
assert result.get_response()["id"] == "triton-1"

# The client's defaults: binary data on inputs and outputs (the binary tensor
# data extension, Inference-Header-Content-Length).
inputs = [httpclient.InferInput("a", [2, 4], "FP32"), httpclient.InferInput("b", [2, 4], "FP32")]
inputs[0].set_data_from_numpy(a)
inputs[1].set_data_from_numpy(b)
outputs = [httpclient.InferRequestedOutput("sum"), httpclient.InferRequestedOutput("product")]
result = client.infer("add_mul", inputs, outputs=outputs, request_id="triton-2")
np.testing.assert_allclose(result.as_numpy("sum"), a + b)
np.testing.assert_allclose(result.as_numpy("product"), a * b)
assert result.get_output("sum")["parameters"]["binary_data_size"] == 32, result.get_response()

# Mixed: one input binary, one JSON; one output binary, one JSON.
inputs = [httpclient.InferInput("a", [2, 4], "FP32"), httpclient.InferInput("b", [2, 4], "FP32")]
inputs[0].set_data_from_numpy(a, binary_data=True)
inputs[1].set_data_from_numpy(b, binary_data=False)
outputs = [
    httpclient.InferRequestedOutput("sum", binary_data=True),
    httpclient.InferRequestedOutput("product", binary_data=False),
]
result = client.infer("add_mul", inputs, outputs=outputs)
np.testing.assert_allclose(result.as_numpy("sum"), a + b)
np.testing.assert_allclose(result.as_numpy("product"), a * b)
assert "data" in result.get_output("product"), result.get_response()

# All outputs binary when none is named (binary_data_output on the request).
result = client.infer("add_mul", inputs)
np.testing.assert_allclose(result.as_numpy("product"), a * b)

# A bad request surfaces as an exception carrying the server's message.
bad = [httpclient.InferInput("a", [2, 4], "FP32")]
bad[0].set_data_from_numpy(a, binary_data=False)
try:
    client.infer("add_mul", bad)
    raise SystemExit("expected an error for the missing input")
except httpclient.InferenceServerException as e:
    assert "missing input b" in str(e), str(e)
print("tritonclient: ok")

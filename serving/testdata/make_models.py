#!/usr/bin/env python3
"""Writes the small ONNX models the serving tests load.

Run from anywhere: `python3 serving/testdata/make_models.py` (needs `pip install onnx numpy`).
The generated .onnx files are committed, so the Rust tests never need Python. Each model has
a dynamic first (batch) dimension named "batch" so the model server can batch requests.

- add_mul.onnx: a, b FP32 [-1,4]  -> sum = a + b, product = a * b      (FP32 [-1,4])
- linear.onnx:  x FP32 [-1,3]     -> y = x @ W + bias                  (FP32 [-1,2])
                W = [[1,2],[3,4],[5,6]], bias = [0.5,-0.5]
- linear_v2.onnx: the same with bias = [1.5,-1.5], so a rollout's two revisions
                answer differently (the rollout tests)
- int_bool.onnx: x INT64 [-1,3], mask BOOL [-1,3]
                -> masked = where(mask, x, 0) (INT64 [-1,3]), positive = x > 0 (BOOL [-1,3])
- mlp.onnx:     x FP32 [-1,16]  -> relu(relu(x @ W1) @ W2) @ W3 = y (FP32 [-1,10]), a small MLP
                (16 -> 1024 -> 1024 -> 10) for the batching benchmark. Its weights are built
                in the graph by ConstantOfShape (every weight 0.001), so the file stays tiny while
                a run costs what a real MLP of that size costs; for x >= 0 every output is
                sum(x) * 1024 * 1024 * 1e-9.
- mlp_wide.onnx: the same with 2048-wide hidden layers (16 -> 2048 -> 2048 -> 10).
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 13)]


def save(model, name):
    model.ir_version = 8  # widely readable (tract, onnxruntime)
    onnx.checker.check_model(model)
    path = os.path.join(HERE, name)
    onnx.save(model, path)
    print("wrote", path)


def add_mul():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4])
    p = helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
        "add_mul",
        [a, b],
        [s, p],
    )
    save(helper.make_model(graph, opset_imports=OPSET, producer_name="gpuctl-testdata"), "add_mul.onnx")


def linear(bias_values=(0.5, -0.5), name="linear.onnx"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    w = numpy_helper.from_array(np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32), "W")
    bias = numpy_helper.from_array(np.array(bias_values, dtype=np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "bias"], ["y"])],
        "linear",
        [x],
        [y],
        initializer=[w, bias],
    )
    save(helper.make_model(graph, opset_imports=OPSET, producer_name="gpuctl-testdata"), name)


def int_bool():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 3])
    mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 3])
    masked = helper.make_tensor_value_info("masked", TensorProto.INT64, ["batch", 3])
    positive = helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch", 3])
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("Where", ["mask", "x", "zero"], ["masked"]),
            helper.make_node("Greater", ["x", "zero"], ["positive"]),
        ],
        "int_bool",
        [x, mask],
        [masked, positive],
        initializer=[zero],
    )
    save(helper.make_model(graph, opset_imports=OPSET, producer_name="gpuctl-testdata"), "int_bool.onnx")


def mlp(hidden=1024, file="mlp.onnx"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])
    nodes, inits = [], []
    for name, rows, cols in [("W1", 16, hidden), ("W2", hidden, hidden), ("W3", hidden, 10)]:
        inits.append(numpy_helper.from_array(np.array([rows, cols], dtype=np.int64), name + "_shape"))
        nodes.append(
            helper.make_node(
                "ConstantOfShape",
                [name + "_shape"],
                [name],
                value=numpy_helper.from_array(np.array([0.001], dtype=np.float32)),
            )
        )
    nodes += [
        helper.make_node("MatMul", ["x", "W1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "W2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("MatMul", ["a2", "W3"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [x], [y], initializer=inits)
    save(helper.make_model(graph, opset_imports=OPSET, producer_name="gpuctl-testdata"), file)


if __name__ == "__main__":
    add_mul()
    linear()
    linear((1.5, -1.5), "linear_v2.onnx")
    int_bool()
    mlp()
    mlp(2048, "mlp_wide.onnx")

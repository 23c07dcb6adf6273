"""deqlib.memory: argument checks (the measurements are tested with the solvers)."""

import pytest
import torch

from deqlib import memory


def test_a_function_that_is_not_callable_is_named():
    for measure in (memory.saved_tensor_bytes, memory.cuda_peak_bytes):
        with pytest.raises(TypeError, match=r"fn must be callable as fn\(\) with no arguments"):
            measure(torch.ones(3))        # a tensor where a function is meant


def test_saved_tensor_bytes_counts_what_a_product_keeps():
    x = torch.ones(100, requires_grad=True)
    assert memory.saved_tensor_bytes(lambda: (x * x).sum()) == 400
